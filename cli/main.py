"""The ``regionsync`` command. Each package adds its own sub-commands through ``register()``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from regionsync.errors import RegionsyncError
from regionsync.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regionsync",
        description="CDC pipeline keeping a RAG assistant's knowledge and dialogs alive across regions. "
        "Every setting can also come from a REGIONSYNC_* environment variable (see `regionsync settings`).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("settings", help="print the effective settings (secrets masked)")
    p.set_defaults(func=_cmd_settings)

    from connectors import cli as connectors_cli
    from stack import cli as stack_cli
    from streams import cli as streams_cli

    stack_cli.register(sub)
    connectors_cli.register(sub)
    streams_cli.register(sub)
    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from indexer import cli as indexer_cli

    indexer_cli.register(sub)
    from dialog import cli as dialog_cli

    dialog_commands = dialog_cli.register(sub)
    from serve import cli as serve_cli

    serve_cli.register(sub)  # after indexer's: it routes `search` through the running service
    serve_cli.register_dialog(dialog_commands)
    from cli import demo

    demo.register(sub)
    from bench import cli as bench_cli

    bench_cli.register(sub)
    from drills import cli as drills_cli

    drills_cli.register(sub)
    from cli import replicator
    from mirror import cli as mirror_cli

    mirror_cli.register(sub, serve=replicator.serve)


def _cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    import orjson

    sys.stdout.write(orjson.dumps(settings.public_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = Settings()
        return int(args.func(args, settings) or 0)
    except RegionsyncError as exc:
        print(f"regionsync: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # each package's root error prints cleanly too
        if isinstance(exc, _package_errors()):
            print(f"regionsync: error: {exc}", file=sys.stderr)
            return 2
        raise


def _package_errors() -> tuple[type[Exception], ...]:
    from connectors.errors import ConnectorError
    from embedding.errors import EmbeddingError
    from indexer.errors import IndexerError
    from serve.errors import ServeError
    from streams.errors import StreamsError

    errors: list[type[Exception]] = [ConnectorError, EmbeddingError, IndexerError, ServeError, StreamsError]
    try:
        from dialog.errors import DialogError

        errors.append(DialogError)
    except ImportError:  # pragma: no cover
        pass
    from drills.errors import DrillsError

    errors.append(DrillsError)
    return tuple(errors)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
