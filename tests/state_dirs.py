"""State directories for test stacks that run Postgres.

Not under pytest's tmp_path: every new pytest session on the machine chmods /tmp/pytest-of-USER
to 0700, and when the tests run as root, Postgres runs as the postgres user, which can then no
longer reach its data dir (initdb fails, or `pg_ctl stop` does and leaves the server running).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def private_state_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"regionsync-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
