"""Every worker's metrics module can live in one process (a test session, a region service that
imports the indexer and the dialog code): no metric family is defined twice."""

import importlib

from prometheus_client import REGISTRY

MODULES = ["streams.metrics", "indexer.metrics", "dialog.metrics", "serve.metrics",
           "streams.app", "indexer.worker", "dialog.process", "serve.app"]


def test_all_metrics_modules_import_together_and_share_the_dead_letter_family() -> None:
    for name in MODULES:
        importlib.import_module(name)
    names = {m.name for m in REGISTRY.collect()}
    assert "regionsync_dead_letters" in names
    from dialog import metrics as dialog_metrics
    from indexer import metrics as indexer_metrics
    from streams import metrics as streams_metrics

    assert streams_metrics.DEAD_LETTERS is indexer_metrics.DEAD_LETTERS is dialog_metrics.DEAD_LETTERS


def test_a_second_instance_serves_its_metrics_on_a_free_port_instead_of_dying() -> None:
    import socket
    import urllib.request

    from regionsync.metrics import serve_metrics

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        port = serve_metrics(busy, "127.0.0.1", "test worker")
        assert port != busy
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "regionsync_dead_letters_total" in body
