"""The Faust app of the knowledge pipeline: one agent, ``changes``.

It consumes the Debezium topic, the CMS producers' topic and the regions' heal requests together, in batches
(``take_events``) because embedding is batched, and runs :class:`ChangeProcessor` on each batch in
a worker thread (the model call would otherwise block the event loop, and with it the consumer's
heartbeats). Faust acks a batch's events only after the loop body returns, i.e. after the output
was flushed, and commits acked offsets every ``broker_commit_interval``: at-least-once, and the
region indexers make a redelivered record harmless.

Run: ``python -m streams.app`` (settings from ``REGIONSYNC_*`` environment variables).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from tenacity import AsyncRetrying, RetryCallState, wait_exponential

from mirror import policy
from regionsync.settings import Settings
from streams.gaps import Gaps
from streams.heal import KafkaSourceEvents
from streams.metrics import observe_batch
from streams.processor import ChangeProcessor, RawMessage

log = logging.getLogger(__name__)

APP_ID = "regionsync-changes"


def _tune_fetch_wait(wait_ms: int) -> None:
    """Faust hard-codes aiokafka's fetch_max_wait_ms=1500. A broker that does not wake a parked
    fetch when data arrives (tansu; see shared/STACK.md) then adds up to 1.5 s to every change's
    latency, so we lower it on the consumer Faust creates, before the consumer starts."""
    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(thread_cls, "_regionsync_original_create", None) or thread_cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    thread_cls._regionsync_original_create = original
    thread_cls._create_worker_consumer = create


def _log_retry(events: int) -> Any:
    def log_it(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.error("batch of %d failed; retrying in %.1fs", events, state.upcoming_sleep, exc_info=exc)
    return log_it


def create_app(settings: Settings, processor: ChangeProcessor | None = None) -> faust.App:
    """Build the app. ``processor`` defaults to the real one (model, Postgres cache, Kafka output),
    created when the worker starts so that importing this module stays cheap. It runs in the
    source region, on its broker, beside the CMS database."""
    settings = settings.source()
    _tune_fetch_wait(settings.fetch_wait_max_ms)
    app = faust.App(
        APP_ID,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        web_enabled=False,
        datadir=str(settings.state_dir / "faust"),
        producer_acks=-1,
    )
    source = app.topic(
        settings.cdc_topic,
        settings.cms_topic,
        *policy.inbound_topics(settings, settings.source_region, settings.heal_topic),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="changes")
    gaps = Gaps(KafkaSourceEvents(settings))  # records the fetch stepped over (streams/gaps.py)
    app.on_partitions_revoked.connect(gaps.forget)
    app.on_partitions_assigned.connect(gaps.forget)
    state: dict[str, ChangeProcessor] = {}
    if processor is not None:
        state["processor"] = processor

    def get_processor() -> ChangeProcessor:
        if "processor" not in state:
            state["processor"] = build_processor(settings)
        return state["processor"]

    @app.agent(source, name="changes")
    async def changes(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        proc = await loop.run_in_executor(executor, get_processor)
        # take_events (faust-streaming >= 0.11) is missing from StreamT's type stub.
        async for events in stream.take_events(  # type: ignore[attr-defined]
            settings.batch_max_events, within=settings.batch_linger_s
        ):
            batch = [
                RawMessage(
                    topic=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                    timestamp_ms=int((e.message.timestamp or 0) * 1000),
                )
                for e in events
            ]
            missing = gaps.find(batch)
            # Any failure here is infrastructure: poison input never gets here (it is
            # dead-lettered inside process()); this is the cache, the model or the broker failing.
            # Retrying the same batch, for as long as it takes, keeps order and loses nothing;
            # redelivered records are idempotent downstream.
            async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.5, max=10.0),
                                               before_sleep=_log_retry(len(batch))):
                with attempt:
                    if missing:  # a failing read is retried with the batch
                        batch = await loop.run_in_executor(executor, gaps.mend, batch, missing)
                        missing = []
                    result = await loop.run_in_executor(executor, proc.process, batch)
            observe_batch(len(result.records), result.embedded, result.cached, len(result.dead_letters))
            log.info(
                "batch: %d events -> %d records, %d embedded, %d cached, %d dead-lettered",
                len(batch), len(result.records), result.embedded, result.cached, len(result.dead_letters),
            )

    return app


def build_processor(settings: Settings) -> ChangeProcessor:
    from embedding.runtime import cached_embedder
    from streams.heal import KafkaSourceEvents, PostgresSourceRows
    from streams.output import KafkaRecordOutput

    return ChangeProcessor(
        settings, cached_embedder(settings), KafkaRecordOutput(settings), source_rows=PostgresSourceRows(settings),
        source_events=KafkaSourceEvents(settings),
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings().source()
    from regionsync.metrics import serve_metrics

    serve_metrics(settings.metrics_port("changes"), settings.serve_host, "change agent")
    app = create_app(settings)
    sys.argv = [sys.argv[0], "worker", "--without-web", "--loglevel", "info", *(argv or [])]
    app.main()


if __name__ == "__main__":
    main()
