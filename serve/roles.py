"""Which region writes dialog turns, decided by each region from its own database.

There is no shared database: each region keeps the promotions it knows and a row naming the
active one in its own Postgres (dialog/roles.py); a promotion travels to the other regions on the
promoted region's control topic (dialog/fence.py says how its epoch and its *cut* fence the old
active region's late turns). This module is the service's side:

* a turn is written while holding the region's active-region row ``FOR SHARE``, and only if the
  row names this region (:meth:`RegionRole.writing`; a standby answers 409 naming the active one);
  the dialog worker records a promotion it learns from another region with the row ``FOR UPDATE``,
  so the role changes between two turns, never during one;
* a promotion (:meth:`RegionRole.promote`) records, in one transaction, the new epoch (the highest
  known + 1) and its cut: what this region had received of every other region's dialog topic (its
  replicators' checkpoints and its store's folded positions, both locked meanwhile, so neither moves
  under the cut); then the service publishes it on its control topic;
* a region whose service starts while its row names it (it was the active region and comes back)
  reads every other region's control topic first and accepts no turn until it has
  (:meth:`RegionRole.rejoin`): a promotion elsewhere while it was away makes it a standby.

**Fencing a hung writer.** A turn whose process hangs while it holds the row (frozen, a VM paused)
would keep the dialog worker from recording a promotion. Each writer session is named
(``application_name`` ``regionsync-writer-<region>``); the worker, after ``promote_fence_after_s``
waiting for the row, terminates it (:func:`fence_writers`). The cut out turn cannot finish: it checks
its session right before it publishes (:meth:`RegionRole.check_writer`).

The decisions are pure functions (:func:`may_write`, :func:`dialog.fence.active`); the rest is I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from dialog import fence
from dialog import roles as role_db
from dialog.fence import Promotion
from dialog.pg_store import ensure_schema as ensure_store_schema
from dialog.roles import Active, fence_writers, writer_name
from mirror.checkpoints import ensure_schema as ensure_mirror_schema
from regionsync.kafka import EndsUnknown, fetch_ends, new_consumer
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from serve.errors import Fenced, NotActive, ServeError

log = logging.getLogger(__name__)

__all__ = ["Active", "RegionRole", "active_region", "fence_writers", "may_write", "writer_name"]


def may_write(active: Active, region: str) -> None:
    """Raise :class:`NotActive` unless ``region`` is the one that writes turns."""
    if active.region != region:
        raise NotActive(region, active.region)


class RegionRole:
    """This region's role, in its own database."""

    def __init__(self, settings: Settings, region: str, lock_timeout_s: float = 30.0) -> None:
        self.settings = settings.for_region(region)
        self.region = region
        self._lock_timeout_ms = int(lock_timeout_s * 1000)
        try:
            self._dsn = region_dsn(self.settings, region)
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                ensure_store_schema(conn, self.settings.source_region)
                ensure_mirror_schema(conn)
        except psycopg.Error as exc:
            raise ServeError(f"region {region}'s database is unavailable: {exc}") from exc
        self._writer: psycopg.Connection[Any] | None = None

    def _connect(self, application_name: str = "regionsync-serve") -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._dsn, autocommit=True, application_name=application_name, connect_timeout=10)
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
        return conn

    def current(self) -> Active:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
            return role_db.read_active(conn)

    def promotions(self) -> list[Promotion]:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
            return role_db.read_promotions(conn)

    def promotion_of(self, active: Active) -> Promotion:
        """The promotion behind the active-region row (the genesis one before any)."""
        found = [p for p in self.promotions() if (p.epoch, p.region) == (active.epoch, active.region)]
        return found[0] if found else fence.genesis(self.settings.source_region)

    @contextmanager
    def writing(self) -> Iterator[Active]:
        """Hold the row shared while the caller writes a turn; raise :class:`NotActive` unless this
        region is active. One writer connection per service (turns are serialised)."""
        try:
            if self._writer is None or self._writer.closed:
                self._writer = self._connect(writer_name(self.region))
        except psycopg.Error as exc:
            raise ServeError(f"region {self.region}'s database is unavailable: {exc}") from exc
        conn = self._writer
        try:
            with conn.transaction():
                active = role_db.read_active(conn, "FOR SHARE")
                may_write(active, self.region)
                yield active
        except psycopg.OperationalError as exc:
            conn.close()  # reconnect next time
            # Fenced (the worker recording a promotion cut this session), Postgres down or
            # restarting, or the row held past lock_timeout: nothing was written; 503 (retry later).
            raise Fenced(f"region {self.region}'s turn was not written: its session with the active-region row "
                         f"ended (a promotion was being recorded, or the database restarted): {exc}") from exc

    def check_writer(self) -> None:
        """Called inside :meth:`writing`, right before a turn's events are published: raise
        :class:`Fenced` if this writer's session was terminated meanwhile."""
        conn = self._writer
        if conn is None or conn.closed:
            raise Fenced("no writer session")
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise Fenced(f"this region's writer session was fenced: {exc}") from exc

    def promote(self) -> tuple[Promotion, bool]:
        """Make this region the active one: a new epoch and its cut, in one transaction. Returns
        the promotion and whether it is new (promoting the active region again changes nothing)."""
        regions = self.settings.regions
        with self._connect() as conn, conn.transaction(), conn.cursor() as cur:
            # The row first (the order the worker takes it in), then what the cut is read from:
            # neither the store's positions nor the replicators' checkpoints move until commit.
            cur.execute("SELECT region FROM regionsync_active_region FOR UPDATE")
            cur.execute("LOCK TABLE dialog_sources IN SHARE MODE")
            cur.execute("LOCK TABLE mirror_checkpoints IN SHARE MODE")
            known = role_db.read_promotions(conn)
            top = fence.active(known, self.settings.source_region)
            if top.region == self.region:
                return top, False
            received: dict[tuple[str, int], int] = {}
            for origin, p, n in cur.execute("SELECT origin, partition, next_source FROM dialog_sources").fetchall():
                received[(str(origin), int(p))] = int(n)
            for origin, p, n in cur.execute(
                "SELECT source_region, partition, next_offset FROM mirror_checkpoints WHERE topic = %s",
                (self.settings.dialog_topic,),
            ).fetchall():
                key = (str(origin), int(p))
                received[key] = max(received.get(key, 0), int(n))
            promo = Promotion(top.epoch + 1, self.region, top.region, fence.cut_of(received, self.region, regions),
                              int(time.time() * 1000))
            role_db.record_promotions(cur, [promo], self.settings.source_region, published=False)
        log.info("region %s promoted: epoch %d (previous %s), cut %s", self.region, promo.epoch, promo.previous,
                 promo.cut)
        return promo, True

    def unpublished(self) -> list[Promotion]:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
            return role_db.unpublished(conn, self.region)

    def mark_published(self, promo: Promotion) -> None:
        with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
            role_db.mark_published(conn, promo)

    def record(self, promotions: list[Promotion]) -> Active:
        """Record promotions read from other regions (the rejoin); returns the active region after."""
        with self._connect() as conn, conn.transaction(), conn.cursor() as cur:
            return role_db.record_promotions(cur, promotions, self.settings.source_region)

    def rejoin(self, timeout_s: float) -> tuple[list[Promotion], list[str]]:
        """Read every other region's control topic from its own broker and record what it holds.
        Returns the promotions found and the regions that did not answer within ``timeout_s``."""
        found: list[Promotion] = []
        silent: list[str] = []
        for peer in self.settings.others(self.region):
            try:
                found += read_control(self.settings, peer, timeout_s)
            except (EndsUnknown, KafkaException) as exc:
                log.warning("region %s rejoining: region %s's control topic did not answer (%s)", self.region, peer, exc)
                silent.append(peer)
        if found:
            self.record(found)
        return found, silent

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def active_region(settings: Settings) -> str:
    """The active region as the regions that answer hold it: the highest ballot among their views
    (they agree once replication carried the newest promotion everywhere)."""
    views = []
    for region in settings.regions:
        try:
            role = RegionRole(settings, region)
        except ServeError:
            continue  # a region that is down has no view
        try:
            views.append(role.current())
        except psycopg.Error:
            continue
        finally:
            role.close()
    if not views:
        raise ServeError("no region's database answers: the active region is unknown")
    return max(views, key=lambda a: (a.epoch, a.region)).region


def read_control(settings: Settings, region: str, timeout_s: float) -> list[Promotion]:
    """Every promotion on ``region``'s own control topic, read from ``region``'s broker (another
    region's: across the link, through its edge with mutual TLS)."""
    kafka = settings.kafka_link(region)
    tp = (settings.control_topic, 0)
    end = fetch_ends(kafka, [tp], timeout_s)[tp]
    if end == 0:
        return []
    consumer = new_consumer(kafka.client({"group.id": "regionsync-rejoin", "enable.auto.commit": False,
                                          "fetch.wait.max.ms": kafka.fetch_wait_max_ms}))
    out: list[Promotion] = []
    try:
        consumer.assign([TopicPartition(settings.control_topic, 0, 0)])
        deadline = time.monotonic() + timeout_s
        position = 0
        while position < end:
            if time.monotonic() > deadline:
                raise EndsUnknown(f"region {region}'s control topic: read {position} of {end} records in time")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("control topic of %s: %s", region, err)
                    continue
                position = max(position, int(msg.offset() or 0) + 1)
                try:
                    out.append(Promotion.from_json(msg.value() or b""))
                except ValueError as exc:
                    log.warning("control topic of %s: record %d is not a promotion (%s)", region, msg.offset(), exc)
    finally:
        consumer.close()
    return out
