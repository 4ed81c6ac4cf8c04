"""The sessions' keys travel with their events: copied by the replicator before the records.

A region folds a copied event only if it holds the event's session key (dialog/sealing.py), and a
failover restores only the sessions whose keys the new region holds. So the replicator that
copies a region's dialog records into another region first copies their sessions' keys, from the
source region's database into the target's (:class:`KeyCourier`, its ``before_copy`` hook): a
record never reaches a region ahead of its key. Sessions the source erased meanwhile have no key
there any more; their erasure is copied instead, so the target deletes its own copy of the key at
once instead of waiting for the erasure event. A database that does not answer makes the
replicator retry the batch (nothing is copied without its keys).

Keys cross regions only this way, never through a log: an erasure must be able to remove them.
A region that rebuilds an empty store (it lost its database) first pulls every key and erasure
the other regions hold (:func:`pull_keys`): the keys of the sessions it made itself would
otherwise be gone with its database.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from confluent_kafka import Message

from dialog.keys import KeyRing, PostgresKeyRing, keys_for
from regionsync.pgdb import link_dsn, region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)


class KeyCourier:
    """``before_copy`` of the replicator from ``source`` into ``target`` (mirror/replicator.py)."""

    def __init__(self, settings: Settings, source: str, target: str,
                 rings: dict[str, KeyRing] | None = None) -> None:
        """``rings``: the two regions' key rings (tests); by default each region's database."""
        self.settings = settings
        self.source, self.target = source, target
        self._given = rings is not None
        self._rings: dict[str, KeyRing] = dict(rings or {})
        self.copied = 0
        self.erasures = 0

    def _ring(self, region: str) -> KeyRing:
        # Opened on first use (and again after a failure): a database that is down when the
        # replicator starts must not stop it; the batch waits instead.
        ring = self._rings.get(region)
        if ring is None:
            # The source region's database is read across the link (read-only, mutual TLS);
            # the target's is this region's own.
            ring = self._rings[region] = (PostgresKeyRing(region_dsn(self.settings, region)) if region == self.target
                                          else PostgresKeyRing(link_dsn(self.settings, region), ensure=False))
        return ring

    def __call__(self, msgs: Sequence[Message]) -> None:
        dialog = [m for m in msgs if str(m.topic()) == self.settings.dialog_topic]
        if not dialog:
            return
        try:
            source, target = self._ring(self.source), self._ring(self.target)
            keys = keys_for(source, dialog)
            sessions = {k.decode("utf-8", "replace") for m in dialog if (k := m.key()) is not None}
            erased = source.erased(sessions - {sid for sid, _kid in keys})
            if erased:
                target.erase(erased)
            self.copied += target.put_many(keys)
            self.erasures += len(erased)
        except Exception:
            self.close()  # a connection that failed is opened again for the next try
            raise

    def close(self) -> None:
        if self._given:
            return
        for ring in self._rings.values():
            try:
                if isinstance(ring, PostgresKeyRing):
                    ring.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection: nothing to do
                pass
        self._rings.clear()


def pull_keys(settings: Settings, region: str, ring: KeyRing) -> dict[str, int]:
    """Copy into ``ring`` (``region``'s) every key and erasure the other regions hold; returns the
    keys pulled per region. A region that does not answer is skipped, saying so: its keys still
    come with its records later (the courier), those of the sessions this region made do not."""
    pulled: dict[str, int] = {}
    for peer in settings.others(region):
        try:
            # Not created if missing (a peer without that database has no keys to give).
            other = PostgresKeyRing(link_dsn(settings, peer), ensure=False)
            try:
                keys, erased = other.everything()
            finally:
                other.close()
        except Exception as exc:  # noqa: BLE001 - a peer that is down: rebuild with what there is
            log.warning("region %s: keys not pulled from region %s (%s: %s)", region, peer, type(exc).__name__, exc)
            continue
        ring.erase(erased)
        pulled[peer] = ring.put_many(keys)
    log.info("region %s: pulled the other regions' session keys before rebuilding: %s", region, pulled)
    return pulled
