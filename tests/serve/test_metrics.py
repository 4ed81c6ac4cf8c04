"""/metrics of the region services and of every worker, on the real stack, and a real
Prometheus scraping all of them."""

from __future__ import annotations

import secrets
import time

import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from indexer.lag import lag_report
from regionsync.settings import Settings
from stack import prometheus

from .conftest import api, wait_for

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = api.get(url, timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def sample(samples: dict, name: str, **labels: str) -> float:
    """Like :func:`value`, but the metric must be exposed: a sum over no sample reads 0, which
    would pass any ``>= 0``."""
    want = set(labels.items())
    assert any(n == name and want <= set(lab) for n, lab in samples), f"{name} {labels} is not exposed"
    return value(samples, name, **labels)


def worker_url(settings: Settings, worker: str, region: str | None = None) -> str:
    return f"http://{settings.serve_host}:{settings.metrics_port(worker, region)}/metrics"


def test_a_search_moves_the_latency_histogram_of_its_route(settings: Settings, urls: dict[str, str]) -> None:
    for region, url in urls.items():
        before = scrape(f"{url}/metrics")
        count = "regionsync_http_request_duration_seconds_count"
        assert api.get(f"{url}/search", params={"q": "shipping"}, timeout=30).status_code == 200
        after = scrape(f"{url}/metrics")
        assert value(after, count, route="/search", region=region) == value(before, count, route="/search") + 1
        assert value(after, "regionsync_http_requests_total", route="/search", status="200") >= 1
        # Region gauges read at scrape time: the lag is what `regionsync lag` computes (0 when quiet).
        sample(after, "regionsync_index_lag_records", region=region)
        wait_for(lambda r=region, u=url: value(scrape(f"{u}/metrics"), "regionsync_index_lag_records", region=r)
                 == sum(p.lag for p in lag_report(settings, r)), 60, f"index lag gauge of {region} = its lag")
        assert any(n == "regionsync_index_committed_offset" for n, _ in after)
        assert value(after, "regionsync_region_active", region=region) == (1.0 if region == "east" else 0.0)
        assert value(after, "regionsync_region_readings_up", region=region) == 1.0


def test_a_poison_record_moves_the_dead_letter_counter(settings: Settings) -> None:
    def dead(region: str) -> float:
        return value(scrape(worker_url(settings, "indexer", region)), "regionsync_dead_letters_total",
                     stage=f"indexer:{region}")

    before = {r: dead(r) for r in settings.regions}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.chunks_topic, key=b"poison", value=b"this is not a record")
    assert producer.flush(30) == 0
    for region in settings.regions:
        wait_for(lambda r=region: dead(r) == before[r] + 1, 60, f"dead letter counted in {region}")


def test_every_worker_serves_metrics(settings: Settings, urls: dict[str, str]) -> None:
    # A turn, so that every region's dialog worker has something to snapshot (every 5 s here).
    turned_at = time.time()
    turn = api.post(f"{urls['east']}/sessions/metrics-{secrets.token_hex(4)}/turns", json={"text": "hi"},
                         timeout=60)
    assert turn.status_code == 200, turn.text
    created = "regionsync_dialog_snapshot_created_timestamp_seconds"
    changes = scrape(worker_url(settings, "changes"))
    assert value(changes, "regionsync_embeddings_computed_total") > 0
    assert ("regionsync_embeddings_cached_total", ()) in changes
    for region in settings.regions:
        indexer = scrape(worker_url(settings, "indexer", region))
        assert value(indexer, "regionsync_freshness_seconds_count", region=region) > 0
        assert value(indexer, "regionsync_index_records_applied_total", region=region) > 0
        wait_for(lambda r=region: value(scrape(worker_url(settings, "dialog", r)), created, region=r) >= turned_at,
                 120, f"a snapshot in {region} after the turn")
        dialog = scrape(worker_url(settings, "dialog", region))
        age = sample(dialog, "regionsync_dialog_snapshot_age_seconds", region=region)
        assert 0 <= age <= time.time() - sample(dialog, created, region=region) + 1.0


def test_a_turn_moves_the_dialog_events_applied_in_every_region(settings: Settings, urls: dict[str, str]) -> None:
    def applied(region: str) -> float:
        return value(scrape(worker_url(settings, "dialog", region)), "regionsync_dialog_events_total",
                     region=region, outcome="applied")

    before = {r: applied(r) for r in settings.regions}
    session = f"metrics-{secrets.token_hex(4)}"
    turn = api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "hello"}, timeout=60)
    assert turn.status_code == 200, turn.text
    events = turn.json()["events"]
    assert events >= 3  # session started, user utterance, bot replied
    for region in settings.regions:  # the standby's worker folds the same events (warm standby)
        wait_for(lambda r=region: applied(r) >= before[r] + events, 60, f"dialog events applied in {region}")


def test_the_model_is_loaded_once_per_service_process(settings: Settings, urls: dict[str, str]) -> None:
    for url in urls.values():
        for q in ("first query", "second query", "third query"):
            assert api.get(f"{url}/search", params={"q": q}, timeout=60).status_code == 200
    for region in settings.regions:
        log = (settings.state_dir / "logs" / f"serve-{region}.log").read_text()
        assert log.count("(ONNX, ") == 1, log[-3000:]  # the embedder's "loaded ... (ONNX, 384 dims)" line


def test_prometheus_scrapes_every_target_of_the_stack(settings: Settings) -> None:
    prometheus.start(settings)
    try:
        expected = {t for found in prometheus.targets(settings).values() for t, _ in found}

        def all_up() -> bool:
            data = api.get(f"{prometheus.url(settings)}/api/v1/targets", timeout=10).json()["data"]
            up = {t["labels"]["instance"] for t in data["activeTargets"] if t["health"] == "up"}
            return up == expected

        wait_for(all_up, 90, "every target up in Prometheus")
        rules = api.get(f"{prometheus.url(settings)}/api/v1/rules", timeout=10).json()["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        defined = {r["alert"] for g in yaml.safe_load(prometheus.RULES.read_text())["groups"] for r in g["rules"]}
        assert {"RegionLatencyP99High", "RegionErrorRateHigh", "RegionIndexLagGrowing", "DialogSnapshotTooOld",
                "RegionAnswerLlmFailing", "RegionsyncTargetDown"} <= defined
        assert names == defined  # every rule of deploy/prometheus/alerts.yml loaded, nothing else
    finally:
        prometheus.stop(settings)
