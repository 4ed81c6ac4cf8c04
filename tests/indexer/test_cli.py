"""``regionsync search`` / ``lag`` through argparse, against a real region."""

from __future__ import annotations

import argparse

import orjson
import pytest

from embedding.embedder import Embedder
from indexer import cli, search
from indexer.sink import RegionSink
from regionsync.settings import Settings

from .conftest import REGION, record_factory

pytestmark = pytest.mark.integration  # starts real services


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_search_prints_hits_with_their_source(
    shared_milvus: Settings,
    collection_name: str,
    embedder: Embedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = shared_milvus.model_copy(update={"collection": collection_name})
    make = record_factory(embedder)
    sink = RegionSink.for_region(settings, REGION)
    sink.apply(
        [
            make("tides", 3, ["The moon's gravity drives ocean tides twice a day."], title="Tides"),
            make("tax", 1, ["File your quarterly tax return before the deadline."], title="Taxes"),
        ]
    )
    sink.close()
    monkeypatch.setattr(search, "embedder_from_settings", lambda s: embedder)

    args = parse(["search", "why does the sea rise and fall", "--region", REGION, "--k", "2"])
    assert args.func(args, settings) == 0
    out = capsys.readouterr().out
    assert out.index("Tides") < out.index("Taxes")
    assert "doc tides chunk 0" in out and "version=3" in out and "cms.public.documents[0]@" in out and "lsn=3" in out

    args = parse(["search", "why does the sea rise and fall", "--region", REGION, "--json"])
    assert args.func(args, settings) == 0
    hits = orjson.loads(capsys.readouterr().out)
    assert hits[0]["doc_id"] == "tides" and hits[0]["version"] == 3 and hits[0]["source"]["lsn"] == 3
    assert set(hits[0]) >= {"title", "doc_id", "chunk_index", "score", "version", "source", "text"}


def test_search_on_a_region_that_is_down_fails_cleanly(
    shared_milvus: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stack import procs

    settings = shared_milvus.model_copy(update={"milvus_uris": {REGION: f"http://127.0.0.1:{procs.free_port()}"}})
    monkeypatch.setattr(search, "embedder_from_settings", lambda s: embedder)
    args = parse(["search", "anything", "--region", REGION])
    assert args.func(args, settings) == 2
    assert "unavailable" in capsys.readouterr().err
