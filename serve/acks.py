"""The ``mirrored`` acknowledgement mode: a turn is told to the customer only once every other
region in sync holds its events.

The replicator into each other region writes its checkpoint there after that region's broker
acknowledged the copies (mirror/checkpoints.py). So a turn whose events sit at offsets O of this
region's dialog topic is in region R once R's checkpoint for this region's dialog topic is past
O in each partition. This module waits for that, reading R's database.

**In sync, as Kafka's ISR.** A region that does not confirm within ``mirrored_ack_timeout_s``
(it is down, cut off, or its replicator is stopped) leaves the set of regions waited for: the
turn that found out, and the turns after it, are acknowledged without it, and the service says
so (readiness note, ``regionsync_mirrored_ack_out_of_sync``), the way ``acks=all`` waits for the
in-sync replicas only. It comes back into the set once its checkpoint holds everything this
region had acknowledged (checked at most once a second). So RPO 0 holds while every other region
is in sync: losing this region then loses no acknowledged turn. After a failover the new active
region does not wait for the lost one (it could not take a single turn otherwise); it waits for
it again once the lost region is back and has caught up. The price while in sync: a longer turn
(the replicator's fetch wait plus a round trip); a region falling out of sync costs one turn the
timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from regionsync.pgdb import region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.005
RECHECK_S = 1.0  # how often a region out of sync is asked whether it caught up


class MirroredAcks:
    def __init__(self, settings: Settings, region: str) -> None:
        self.settings = settings
        self.region = region
        self.topic = settings.dialog_topic
        self.peers = settings.others(region)
        self._dsns = {peer: region_dsn(settings, peer, create=False) for peer in self.peers}
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self.out_of_sync: dict[str, float] = {}  # peer -> since when (wall clock)
        self._rechecked: dict[str, float] = {}
        self._acked: dict[int, int] = {}  # partition -> highest offset acknowledged to a customer

    def _conn(self, peer: str) -> psycopg.Connection[Any]:
        conn = self._conns.get(peer)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._dsns[peer], autocommit=True, connect_timeout=2)
            self._conns[peer] = conn
        return conn

    def copied(self, peer: str) -> dict[int, int]:
        """Next offset of this region's dialog topic, per partition, that ``peer`` holds."""
        rows = self._conn(peer).execute(
            "SELECT partition, next_offset FROM mirror_checkpoints WHERE source_region = %s AND topic = %s",
            (self.region, self.topic),
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def _holds(self, peer: str, need: dict[int, int]) -> bool | None:
        """True/False; None when the region's database does not answer at all (it is down)."""
        try:
            held = self.copied(peer)
        except psycopg.Error:
            self._conns.pop(peer, None)
            return None
        return all(held.get(p, 0) > o for p, o in need.items())

    def _recheck(self) -> None:
        """Take back a region out of sync that now holds everything acknowledged so far."""
        now = time.monotonic()
        for peer in list(self.out_of_sync):
            if now - self._rechecked.get(peer, 0.0) < RECHECK_S:
                continue
            self._rechecked[peer] = now
            if self._holds(peer, self._acked) is True:
                log.info("region %s: mirrored acknowledgements wait for region %s again (it caught up)",
                         self.region, peer)
                del self.out_of_sync[peer]

    def wait(self, written: Iterable[tuple[int, int]]) -> float:
        """Block until every region in sync holds the (partition, offset) records; returns seconds
        waited. A region that does not within the timeout leaves the set (see the module doc)."""
        need: dict[int, int] = {}
        for partition, offset in written:
            need[partition] = max(need.get(partition, -1), offset)
        self._recheck()
        started = time.monotonic()
        deadline = started + self.settings.mirrored_ack_timeout_s
        pending = {p for p in self.peers if p not in self.out_of_sync}
        while pending:
            for peer in sorted(pending):
                held = self._holds(peer, need)
                if held is None:  # its database refuses us: the region is down, not slow
                    self._leave(peer, "its database does not answer")
                if held is not False:
                    pending.discard(peer)
            if not pending:
                break
            if time.monotonic() > deadline:
                for peer in pending:
                    self._leave(peer, f"it did not confirm a turn within {self.settings.mirrored_ack_timeout_s:.0f}s")
                break
            time.sleep(POLL_S)
        for p, o in need.items():
            self._acked[p] = max(self._acked.get(p, -1), o)
        return time.monotonic() - started

    def _leave(self, peer: str, why: str) -> None:
        self.out_of_sync[peer] = time.time()
        self._rechecked[peer] = time.monotonic()
        log.warning("region %s: region %s is out of sync (%s): turns are acknowledged without it until it "
                    "catches up (their RPO is no longer 0)", self.region, peer, why)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
