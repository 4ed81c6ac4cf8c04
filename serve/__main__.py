"""``python -m serve --region R``: run one region's service (what ``regionsync stack up`` starts)."""

from __future__ import annotations

import sys

from serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
