"""The ``mirrored`` acknowledgement mode: a turn is told to the customer only once enough regions
hold its events (RPO 0).

The replicator into each other region writes its checkpoint there after that region's broker
acknowledged the copies (mirror/checkpoints.py). So a turn whose events sit at offsets O of this
region's dialog topic is in region R once R's checkpoint for this region's dialog topic is past
O in each partition. This module waits for that, reading R's database.

**In sync, as Kafka's ISR with ``min.insync.replicas``.** The regions in sync are this one and
every other region that confirmed the turns so far. A region that does not confirm a turn within
``mirrored_ack_timeout_s`` (down, cut off, replicator stopped) leaves the set; it comes back once
its checkpoint holds everything this region wrote (checked at most once a second, by turns and by
the readiness thread). A turn is acknowledged only while at least
``mirrored_min_insync_regions`` regions (this one included; default 2) hold it:

- with too few in sync a turn is refused before anything is published (HTTP 503, retry): what a
  customer was told is in two regions, or the customer was told nothing;
- when the region that times out was needed, the turn's events are already in this region's log
  but unconfirmed elsewhere: it is refused too (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND). Its
  events may still reach the sessions; the customer, told nothing, retries.

``mirrored_min_insync_regions = 1`` gives the other trade: acknowledge without the regions out of
sync (RPO no longer 0 while one is), as ``acks=all`` with ``min.insync.replicas=1``.

**After a failover.** The region this one was promoted over (the promotion's ``previous``) is
excused while it is out of sync: the operator promoted because it was lost, and the new active
region must take turns without it (a failover that could not take a single turn would be
pointless). The excuse ends the moment that region is in sync again; from then on the new active
region waits for it as for any other.

Every read of another region's database runs with a deadline (a frozen database would otherwise
hold a turn, and the readiness thread, forever).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import psycopg

from regionsync.pgdb import link_dsn
from regionsync.settings import Settings
from serve.errors import NotInSync

log = logging.getLogger(__name__)

POLL_S = 0.005
RECHECK_S = 1.0  # how often a region out of sync is asked whether it caught up
QUERY_TIMEOUT_S = 2.0  # a peer's database that does not answer within this is down (or frozen)


@dataclass
class InSync:
    """Which regions hold this region's turns, and whether a turn may be acknowledged. Pure: the
    caller reports what each region confirmed, and when."""

    region: str
    peers: tuple[str, ...]
    min_insync: int
    out_of_sync: dict[str, float] = field(default_factory=dict)  # peer -> since (wall clock)
    excused: set[str] = field(default_factory=set)
    written: dict[int, int] = field(default_factory=dict)  # partition -> highest offset published

    def members(self) -> list[str]:
        return [self.region] + [p for p in self.peers if p not in self.out_of_sync]

    def needed(self) -> int:
        """Regions that must hold a turn, this one included."""
        excused_out = len(self.excused & self.out_of_sync.keys())
        return max(1, min(self.min_insync, 1 + len(self.peers)) - excused_out)

    def shortfall(self) -> str | None:
        """Why a turn cannot be acknowledged now, or None."""
        members, needed = self.members(), self.needed()
        if len(members) >= needed:
            return None
        out = ", ".join(f"{p} (since {time.strftime('%H:%M:%S', time.localtime(t))})"
                        for p, t in sorted(self.out_of_sync.items()))
        return (f"mirrored acknowledgements need {needed} regions holding each turn; in sync: "
                f"{', '.join(members)}; out of sync: {out}")

    def excuse(self, peer: str) -> None:
        if peer in self.peers:
            self.excused.add(peer)

    def confirmed(self, peer: str) -> None:
        self.excused.discard(peer)

    def leave(self, peer: str, now: float) -> None:
        self.out_of_sync.setdefault(peer, now)

    def rejoin(self, peer: str) -> None:
        self.out_of_sync.pop(peer, None)
        self.excused.discard(peer)

    def wrote(self, need: Mapping[int, int]) -> None:
        for p, o in need.items():
            self.written[p] = max(self.written.get(p, -1), o)


def holds(copied: Mapping[int, int], need: Mapping[int, int]) -> bool:
    """Does a region whose next offsets are ``copied`` hold every (partition, offset) of ``need``?"""
    return all(copied.get(p, 0) > o for p, o in need.items())


class MirroredAcks:
    def __init__(self, settings: Settings, region: str,
                 copied: Callable[[str, float], dict[int, int] | None] | None = None) -> None:
        self.settings = settings
        self.region = region
        self.topic = settings.dialog_topic
        self.state = InSync(region, tuple(settings.others(region)), settings.mirrored_min_insync_regions)
        self._copied_fn = copied or self._read_copied
        self._dsns = {peer: link_dsn(settings, peer) for peer in self.state.peers}  # across the link
        self._conns: dict[str, psycopg.Connection[Any]] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._rechecked: dict[str, float] = {}
        self._lock = threading.RLock()  # turns and the readiness thread both use the state

    @property
    def out_of_sync(self) -> dict[str, float]:
        return dict(self.state.out_of_sync)

    # ------------------------------------------------------------------ reading a peer
    def copied(self, peer: str, timeout_s: float = QUERY_TIMEOUT_S) -> dict[int, int] | None:
        """Next offset of this region's dialog topic, per partition, that ``peer`` holds; None when
        its database does not answer within ``timeout_s``."""
        return self._copied_fn(peer, timeout_s)

    def _read_copied(self, peer: str, timeout_s: float) -> dict[int, int] | None:
        pool = self._pools.get(peer)
        if pool is None:
            pool = self._pools[peer] = ThreadPoolExecutor(1, thread_name_prefix=f"acks-{peer}")
        future = pool.submit(self._query, peer)
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            # The call may hang until the database wakes: leave it with its thread and connection.
            pool.shutdown(wait=False)
            self._pools.pop(peer, None)
            self._conns.pop(peer, None)
            return None
        except psycopg.Error:
            self._conns.pop(peer, None)
            return None

    def _query(self, peer: str) -> dict[int, int]:
        conn = self._conns.get(peer)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self._dsns[peer], autocommit=True, connect_timeout=int(QUERY_TIMEOUT_S))
            self._conns[peer] = conn
        rows = conn.execute(
            "SELECT partition, next_offset FROM mirror_checkpoints WHERE source_region = %s AND topic = %s",
            (self.region, self.topic),
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    # ------------------------------------------------------------------ the set
    def excuse(self, peer: str) -> None:
        """``peer`` is the region this one was promoted over: do not wait for it while it is out of sync."""
        with self._lock:
            if peer in self.state.peers and peer not in self.state.excused:
                log.info("region %s: mirrored acknowledgements do without region %s (promoted over it) until it "
                         "is in sync again", self.region, peer)
            self.state.excuse(peer)

    def recheck(self) -> None:
        """Take back a region out of sync that now holds everything this region wrote."""
        with self._lock:
            now = time.monotonic()
            for peer in list(self.state.out_of_sync):
                if now - self._rechecked.get(peer, 0.0) < RECHECK_S:
                    continue
                self._rechecked[peer] = now
                copied = self.copied(peer)
                if copied is not None and holds(copied, self.state.written):
                    log.info("region %s: region %s is in sync again: mirrored acknowledgements wait for it",
                             self.region, peer)
                    self.state.rejoin(peer)

    def status(self) -> dict[str, Any]:
        """For readiness: the set, and why turns are refused (None: they are not)."""
        if self._lock.acquire(timeout=0.2):  # else a turn is waiting for its copies: the last state
            try:
                self.recheck()
            finally:
                self._lock.release()
        st = self.state
        return {"in_sync": st.members(), "needed": st.needed(), "out_of_sync": sorted(st.out_of_sync),
                "excused": sorted(st.excused), "turns_refused": st.shortfall()}

    def admit(self) -> None:
        """Before a turn's events are published: raise :class:`NotInSync` when too few regions are
        in sync to acknowledge it (nothing is published then)."""
        with self._lock:
            self.recheck()
            why = self.state.shortfall()
            if why is not None:
                raise NotInSync(f"region {self.region} refuses turns: {why}; retry")

    def wait(self, written: Iterable[tuple[int, int]]) -> float:
        """Block until every region in sync holds the (partition, offset) records; returns seconds
        waited. A region that does not within the timeout leaves the set; if the turn is then held
        by fewer regions than needed, raise :class:`NotInSync` (the events are published but the
        turn is not acknowledged)."""
        need: dict[int, int] = {}
        for partition, offset in written:
            need[partition] = max(need.get(partition, -1), offset)
        with self._lock:
            self.state.wrote(need)
            started = time.monotonic()
            deadline = started + self.settings.mirrored_ack_timeout_s
            pending = {p for p in self.state.peers if p not in self.state.out_of_sync}
            while pending:
                for peer in sorted(pending):
                    copied = self.copied(peer, max(0.1, min(QUERY_TIMEOUT_S, deadline - time.monotonic())))
                    if copied is None:  # its database does not answer: the region is down, not slow
                        self._leave(peer, "its database does not answer")
                        pending.discard(peer)
                    elif holds(copied, need):
                        self.state.confirmed(peer)
                        pending.discard(peer)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    for peer in pending:
                        self._leave(peer, f"it did not confirm a turn within "
                                          f"{self.settings.mirrored_ack_timeout_s:.0f}s")
                    break
                time.sleep(POLL_S)
            why = self.state.shortfall()
            if why is not None:
                raise NotInSync(f"region {self.region} wrote this turn's events but cannot confirm them elsewhere "
                                f"({why}): the turn is not acknowledged; retry")
            return time.monotonic() - started

    def _leave(self, peer: str, why: str) -> None:
        self.state.leave(peer, time.time())
        self._rechecked[peer] = time.monotonic()
        log.warning("region %s: region %s is out of sync (%s); %s", self.region, peer, why,
                    "turns are refused until it catches up" if self.state.shortfall()
                    else "turns are acknowledged without it until it catches up")

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False)
