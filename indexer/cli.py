"""``regionsync search`` and ``regionsync lag``: the indexer's sub-commands."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from regionsync.settings import Settings


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "search",
        help="semantic search in one region's Milvus",
        description="Embed TEXT with the real model (offline) and print the region's nearest chunks.",
    )
    p.add_argument("text", metavar="TEXT", help="the query")
    p.add_argument("--region", help="region to search (default: first of REGIONSYNC_REGIONS)")
    p.add_argument("--k", type=int, default=5, help="number of hits (default: 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser(
        "lag",
        help="records each region's indexer has not applied yet",
        description="Committed offset of each region's consumer group vs the chunks topic's end. "
        "On tansu the end offset can be under-reported: the figure is a lower bound.",
    )
    p.add_argument("--region", action="append", help="region (repeatable; default: all of REGIONSYNC_REGIONS)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_lag)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from embedding.errors import EmbeddingError
    from indexer.errors import IndexerError
    from indexer.search import print_hits, search_region

    region = args.region or settings.regions[0]
    try:
        hits = search_region(settings, region, args.text, args.k)
    except (IndexerError, EmbeddingError) as exc:
        print(f"regionsync: error: region {region}: {exc}", file=sys.stderr)
        return 2
    print_hits(hits, f"region {region}", args.text, args.json)
    return 0


def cmd_lag(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from indexer.lag import lag_report

    regions = args.region or settings.regions
    report = {region: lag_report(settings, region) for region in regions}
    if args.json:
        data = {r: {"lag": sum(p.lag for p in parts), "partitions": [asdict(p) for p in parts]} for r, parts in report.items()}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for region, parts in report.items():
        detail = ", ".join(f"p{p.partition}: {p.committed}/{p.high}" for p in parts) or "no topic"
        print(f"{region:<8} lag={sum(p.lag for p in parts)}  ({detail})")
    return 0
