"""``regionsync publish FILE|-``: the CMS producer CLI (JSON Lines, schema in docs/cms-events.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from regionsync.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="publish CMS document events (JSON Lines) to the CMS topic",
        description="Validates every line first (nothing is sent if any line is invalid), then "
        "publishes with acks=all and waits for every acknowledgement. Schema: docs/cms-events.md.",
    )
    p.add_argument("file", help="a JSON Lines file, or - for standard input")
    p.set_defaults(func=_publish)


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cms import CmsEventError
    from streams.publisher import publish_jsonl

    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    try:
        sent = publish_jsonl(settings, stream)
    except CmsEventError as exc:
        print(f"regionsync publish: {exc}", file=sys.stderr)
        return 2
    finally:
        if stream is not sys.stdin:
            stream.close()
    print(f"published {sent} events to {settings.cms_topic}")
    return 0
