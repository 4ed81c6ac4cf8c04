"""The ``mirrored`` acknowledgement mode: a turn is told to the customer only once every other
region's broker holds its events.

The replicator into each other region writes its checkpoint there after that region's broker
acknowledged the copies (mirror/checkpoints.py). So a turn whose events sit at offsets O of this
region's dialog topic is in region R once R's checkpoint for this region's dialog topic is past
O in each partition. This module waits for that, reading R's database, and gives up after
``mirrored_ack_timeout_s``: then the customer is told the turn was not stored (503), though it is
in this region's log and reaches R when replication does (the turn is not lost, it is not promised).
The price: a longer turn (the replicator's fetch wait plus a round trip), and no turn while a
standby region is unreachable. The gain: losing this region loses no acknowledged turn (RPO 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from dialog.errors import DeliveryError
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.005


class MirroredAcks:
    def __init__(self, settings: Settings, region: str) -> None:
        self.settings = settings
        self.region = region
        self.topic = settings.dialog_topic
        self.peers = settings.others(region)
        self._dsns = {peer: region_dsn(settings, peer, create=False) for peer in self.peers}
        self._conns: dict[str, psycopg.Connection[Any]] = {}

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

    def wait(self, written: Iterable[tuple[int, int]]) -> float:
        """Block until every other region holds the (partition, offset) records; returns seconds
        waited. Raises :class:`DeliveryError` after the timeout."""
        need: dict[int, int] = {}
        for partition, offset in written:
            need[partition] = max(need.get(partition, -1), offset)
        started = time.monotonic()
        deadline = started + self.settings.mirrored_ack_timeout_s
        pending = set(self.peers)
        last_error = ""
        while pending:
            for peer in sorted(pending):
                try:
                    held = self.copied(peer)
                except psycopg.Error as exc:
                    last_error = f"{peer}: {exc}"
                    self._conns.pop(peer, None)
                    continue
                if all(held.get(p, 0) > o for p, o in need.items()):
                    pending.discard(peer)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise DeliveryError(
                    f"the turn is in region {self.region}'s log but region(s) {', '.join(sorted(pending))} did not "
                    f"confirm holding it within {self.settings.mirrored_ack_timeout_s:.0f}s (mirrored "
                    f"acknowledgements){': ' + last_error if last_error else ''}"
                )
            time.sleep(POLL_S)
        return time.monotonic() - started

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
