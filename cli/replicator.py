"""The replicator process: mirror/ copies the records, dialog/ brings what must land before them
(the sessions' keys, dialog/courier.py). Wired here, on the roof, so that neither package imports
the other's inside (dialog reads mirror's topic policy; mirror knows nothing of dialog).

    python -m cli.replicator --from east --to north     (what `regionsync stack up` starts)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from regionsync.settings import Settings


def serve(settings: Settings, source: str, target: str) -> int:
    """Replicate ``source`` into ``target`` until SIGTERM/SIGINT, the sessions' keys first."""
    from dialog.courier import KeyCourier
    from mirror.replicator import serve as replicate

    courier = KeyCourier(settings.for_region(target), source, target)
    try:
        return replicate(settings, source, target, before_copy=courier)
    finally:
        courier.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.replicator", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="region whose topics are copied")
    parser.add_argument("--to", dest="target", required=True, help="region that receives the copies (runs here)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(Settings(), args.source, args.target)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
