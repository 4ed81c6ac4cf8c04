"""One region's service logic, without HTTP: search, answers, dialog turns, readiness, promotion.

Held once per process, working only on its own region's parts (its Milvus, broker, database),
plus, for a promotion or a rejoin, the other regions' control topics. The embedding model is
loaded on first use and kept (it takes seconds); dialog turns are serialised (one writer per
region, and the dialog manager is not thread-safe), searches run concurrently.

Readiness is computed by a background thread every second and served from memory: whatever the
region is doing (catching up, refolding its log, waiting for a broker), /healthz and /readyz
answer at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dialog.errors import DeliveryError
from dialog.fence import Promotion
from dialog.kafka_io import KafkaPublisher
from dialog.keys import lookup
from dialog.manager import DialogManager, Reply
from dialog.pg_store import PostgresStore
from dialog.roles import Active
from dialog.state import SessionState
from embedding.embedder import Embedder
from indexer.lag import lag_report
from indexer.ports import Hit
from regionsync.settings import Settings
from serve.acks import MirroredAcks
from serve.answers import ChatComposer, Composed, make_composer
from serve.dialog_log import DialogLog
from serve.errors import NotCaughtUp, ServeError, UnknownSession
from serve.factory import make_embedder, make_index_reader
from serve.handlers import INQUIRE_ORDER, KNOWLEDGE, KnowledgeHandler, demo_order_lookup
from serve.publishers import ControlPublisher, FencedPublisher
from serve.roles import RegionRole

log = logging.getLogger(__name__)

# A turn on a freshly promoted or restarted active region waits at most this long for its
# dialog state to reach the end of the log before answering 503 (retry).
TURN_CATCH_UP_S = 5.0
READINESS_EVERY_S = 1.0
READINESS_STALE_S = 10.0  # a readiness report older than this says the check itself is stuck


@dataclass(frozen=True)
class TurnResult:
    reply: Reply
    state: SessionState
    answer: Composed | None  # the knowledge answer, when the knowledge handler replied


class RegionService:
    def __init__(self, settings: Settings, region: str, embedder: Embedder | None = None,
                 background: bool = True) -> None:
        settings.serve_port(region)  # unknown region: fail now, naming the configured ones
        settings = settings.for_region(region)
        self.settings = settings
        self.region = region
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._index = make_index_reader(settings, region)
        self.store = PostgresStore.for_region(settings, region)
        self.dialog_log = DialogLog(settings, region, self.store)
        self.role = RegionRole(settings, region)
        self._publisher = KafkaPublisher(settings, keys=self.store.keyring if settings.dialog_seal else None,
                                         region=region)
        self._control = ControlPublisher(settings)
        self._acks = MirroredAcks(settings, region) if settings.dialog_ack_mode == "mirrored" else None
        self.chat: ChatComposer | None  # the chat endpoint composing answers, when configured
        self._compose, self.chat = make_composer(settings)
        self._turn_lock = threading.Lock()
        self._manager: DialogManager | None = None
        self._fenced_publisher: FencedPublisher | None = None
        self._knowledge: KnowledgeHandler | None = None
        self._epoch: int | None = None  # the epoch whose turns this region may write (caught up)
        self._stop = threading.Event()
        # A region that starts as the active one first checks no other region was promoted while
        # it was away (serve/roles.py): until then it takes no turn.
        self.rejoining = threading.Event()
        self._rejoin_note = ""
        self._ready: dict[str, Any] = {"region": region, "ready": False, "role": "unknown",
                                       "checks": {"starting": {"ok": False, "error": "first check not done yet"}}}
        self._ready_at = 0.0
        self._threads: list[threading.Thread] = []
        if background:
            self._start_background()

    # ------------------------------------------------------------------ background work
    def _start_background(self) -> None:
        try:
            active = self.role.current()
        except Exception as exc:  # noqa: BLE001 - the database may still be starting: rejoin checks then
            log.warning("region %s: role unreadable at start (%s)", self.region, exc)
            active = None
        if active is None or active.region == self.region:
            self.rejoining.set()
            self._spawn(self._rejoin, "rejoin")
        self._spawn(self._readiness_loop, "readiness")
        self._spawn(self._republish_loop, "control")

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=f"{name}-{self.region}", daemon=True)
        t.start()
        self._threads.append(t)

    def rejoin_now(self) -> None:
        """The rejoin check in the caller's thread (a service run in-process by the CLI)."""
        if self.role.current().region == self.region:
            self.rejoining.set()
            self._rejoin()

    def _rejoin(self) -> None:
        """Read every other region's control topic (a promotion while this region was away makes
        it a standby); give up on a region that stays silent for ``rejoin_timeout_s``."""
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                found, silent = self.role.rejoin(min(5.0, self.settings.rejoin_timeout_s))
            except Exception as exc:  # noqa: BLE001 - its own database not up yet: try again
                found, silent = [], [f"own database ({exc})"]
            if not silent or time.monotonic() - started >= self.settings.rejoin_timeout_s:
                if silent:
                    log.warning("region %s rejoined without hearing from %s within %.0fs: taking turns as the "
                                "active region; a promotion there would be found when replication resumes "
                                "(its cut then sets this region's later turns aside)", self.region, silent,
                                self.settings.rejoin_timeout_s)
                active = self.role.current()
                self._rejoin_note = (f"rejoined as {'active' if active.region == self.region else 'standby'} "
                                     f"(epoch {active.epoch}; {len(found)} promotions read"
                                     + (f"; no answer from {', '.join(silent)}" if silent else "") + ")")
                log.info("region %s %s", self.region, self._rejoin_note)
                self.rejoining.clear()
                return
            self._stop.wait(1.0)

    def _republish_loop(self) -> None:
        """Publish this region's promotions whose control record was not acknowledged yet."""
        while not self._stop.wait(2.0):
            try:
                self.publish_promotions()
            except Exception as exc:  # noqa: BLE001 - retried every 2 s
                log.debug("republishing promotions: %s", exc)

    def publish_promotions(self) -> None:
        for promo in self.role.unpublished():
            self._control.publish(promo)
            self.role.mark_published(promo)
            log.info("region %s: promotion to epoch %d published on %s", self.region, promo.epoch,
                     self.settings.control_topic)

    def _readiness_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._ready = self.check_readiness()
            except Exception as exc:  # noqa: BLE001 - readiness reports every failure as data
                self._ready = {"region": self.region, "ready": False, "role": "unknown",
                               "checks": {"readiness": {"ok": False, "error": str(exc)}}}
            self._ready_at = time.monotonic()
            self._stop.wait(READINESS_EVERY_S)

    # ------------------------------------------------------------------ knowledge
    def embedder(self) -> Embedder:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.settings)
            return self._embedder

    def search(self, query: str, k: int) -> list[Hit]:
        vector = self.embedder().embed([query])[0]
        return self._index.search(vector, k)

    def answer(self, question: str, k: int = 5) -> Composed:
        composed: Composed = self._compose(question, self.search(question, k))
        return composed

    # ------------------------------------------------------------------ dialog
    def turn(self, session_id: str, message: Mapping[str, Any]) -> TurnResult:
        """Write one turn (409 via NotActive on a standby; 503 via NotCaughtUp while catching up)."""
        if self.rejoining.is_set():
            raise NotCaughtUp(f"region {self.region} is rejoining: it checks no other region was promoted while it "
                              "was away before it takes turns")
        with self._turn_lock, self.role.writing() as active:
            manager, knowledge = self._writer(active)
            knowledge.last = None
            reply = manager.process({**message, "session_id": session_id})
            return TurnResult(reply, manager.state(session_id), knowledge.last)

    def session(self, session_id: str) -> SessionState:
        # The manager's own writes are newest (the store is filled asynchronously by the worker).
        state = self._manager.state(session_id) if self._manager is not None else None
        if state is None or state.last_seq == 0:
            state = self.store.get(session_id)
        if state is None:
            raise UnknownSession(f"no session {session_id!r} in region {self.region}")
        return state

    def _writer(self, active: Active) -> tuple[DialogManager, KnowledgeHandler]:
        if self._epoch != active.epoch or self._manager is None or self._knowledge is None:
            # New role (promotion, restart): the store must hold everything below the promotion's
            # cut before we write, and a manager of an older epoch may remember states another
            # region has moved on.
            promo = self.role.promotion_of(active)
            self.dialog_log.wait_caught_up(promo.cut, TURN_CATCH_UP_S)
            self._excuse(promo)
            self._manager, self._knowledge = self._new_manager(active.epoch)
            self._epoch = active.epoch
        return self._manager, self._knowledge

    def _excuse(self, promo: Promotion) -> None:
        """Mirrored acknowledgements do without the region this one was promoted over while it is
        out of sync (serve/acks.py: a failover must be able to take turns)."""
        if self._acks is not None and promo.previous and promo.previous != self.region:
            self._acks.excuse(promo.previous)

    def _new_manager(self, epoch: int) -> tuple[DialogManager, KnowledgeHandler]:
        self._fenced_publisher = FencedPublisher(self._publisher, self.role, self._acks)
        manager = DialogManager(self._fenced_publisher, sessions=self.store, region=self.region, epoch=epoch)
        knowledge = KnowledgeHandler(lambda text: self.answer(text))
        manager.register_handler(KNOWLEDGE, knowledge)
        from dialog.handlers.order_status import InquireOrderHandler

        manager.register_handler(INQUIRE_ORDER, InquireOrderHandler(demo_order_lookup))
        return manager, knowledge

    @property
    def last_mirror_wait_s(self) -> float | None:
        return self._fenced_publisher.last_mirror_wait_s if self._fenced_publisher else None

    # ------------------------------------------------------------------ role
    def promote(self, force: bool = False) -> dict[str, Any]:
        """Make this region the active one: refused (nothing changed) while its store lags its own
        broker, or while its copy of the active region's log lags a source that answers (unless
        ``force``); then a new epoch and its cut (serve/roles.py), the promotion published on the
        control topic, and the store folded up to the cut; then turns are accepted. The answer says
        how long each step took (the failover drill reports where promotion time goes)."""
        t0 = time.perf_counter()
        current = self.role.current()
        if current.region != self.region:
            lag = self.dialog_log.lag()
            if lag > self.settings.ready_max_dialog_lag and not force:
                raise NotCaughtUp(f"region {self.region} is {lag} dialog events behind its own broker; not promoting "
                                  "(nothing changed)")
            behind = self._replication_behind(current.region)
            if behind and not force:
                raise NotCaughtUp(f"region {self.region}'s copy of region {current.region}'s log is {behind} records "
                                  f"behind while {current.region} answers; not promoting (nothing changed; force to "
                                  "promote anyway: the records not copied yet would be set aside)")
        t1 = time.perf_counter()
        promo, changed = self.role.promote()
        t2 = time.perf_counter()
        published = False
        if changed:
            try:
                self._control.publish(promo)
                self.role.mark_published(promo)
                published = True
            except DeliveryError as exc:  # the background loop publishes it when the broker answers
                log.warning("region %s: %s; publishing it later", self.region, exc)
        with self._turn_lock:
            t3 = time.perf_counter()
            self.dialog_log.wait_caught_up(promo.cut, self.settings.promote_timeout_s)
            self._excuse(promo)
            self._manager, self._knowledge = self._new_manager(promo.epoch)
            self._epoch = promo.epoch
        t4 = time.perf_counter()
        return {
            "region": self.region,
            "active": promo.region,
            "epoch": promo.epoch,
            "previous": promo.previous,
            "changed": changed,
            "published": published or not changed,
            "cut": {o: {str(p): n for p, n in parts.items()} for o, parts in promo.cut.items()},
            "dialog_positions": {f"{t}[{p}]": o for (t, p), o in sorted(self.store.offsets().items())},
            "seconds": {"lag_check": round(t1 - t0, 4), "flip": round(t2 - t1, 4),
                        "turn_in_flight": round(t3 - t2, 4), "catch_up": round(t4 - t3, 4)},
        }

    def _replication_behind(self, source: str) -> int:
        """Records of ``source``'s dialog log not copied here yet, if ``source`` answered the
        replicator in the last few seconds (a source that is gone cannot be waited for)."""
        from mirror.status import inbound

        try:
            row = inbound(self.settings, self.region).get(source)
        except Exception:  # noqa: BLE001 - no checkpoints readable: nothing to wait for
            return 0
        if not row or row["source_seen_s"] is None or row["source_seen_s"] > 5.0:
            return 0
        behind = int(row["topics"].get(self.settings.dialog_topic, 0))
        return behind if behind > self.settings.ready_max_dialog_lag else 0

    # ------------------------------------------------------------------ readiness and metrics
    def readiness(self) -> dict[str, Any]:
        """The last readiness report (computed every second in the background)."""
        age = time.monotonic() - self._ready_at
        if self._ready_at and age > READINESS_STALE_S:
            return {**self._ready, "ready": False,
                    "checks": {**self._ready["checks"],
                               "fresh": {"ok": False, "error": f"readiness last checked {age:.0f}s ago"}}}
        return self._ready

    def check_readiness(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            self._index.ping()
            checks["milvus"] = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - readiness reports every failure as data
            checks["milvus"] = {"ok": False, "error": str(exc)}
        try:
            lag = sum(p.lag for p in lag_report(self.settings, self.region))
            checks["index_lag"] = {"ok": lag <= self.settings.ready_max_index_lag, "records": lag,
                                   "max": self.settings.ready_max_index_lag}
        except Exception as exc:  # noqa: BLE001
            checks["index_lag"] = {"ok": False, "error": str(exc)}
        try:
            dlag = self.dialog_log.lag()
            checks["dialog"] = {"ok": dlag <= self.settings.ready_max_dialog_lag, "events_behind": dlag,
                                "max": self.settings.ready_max_dialog_lag}
        except Exception as exc:  # noqa: BLE001
            checks["dialog"] = {"ok": False, "error": str(exc)}
        try:
            active = self.role.current()
            role = "active" if active.region == self.region else "standby"
            checks["role"] = {"ok": not self.rejoining.is_set(), "active_region": active.region, "epoch": active.epoch}
            if self.rejoining.is_set():
                checks["role"]["error"] = "rejoining: reading the other regions' control topics"
            elif self._rejoin_note:
                checks["role"]["note"] = self._rejoin_note
            if self._acks is not None and role == "active":
                # Reported, not a readiness failure: a GSLB must not fail over from an active region
                # because its standby lags (the standby is the one behind; it cannot take over).
                checks["role"]["mirrored"] = self._acks.status()
        except Exception as exc:  # noqa: BLE001
            role = "unknown"
            checks["role"] = {"ok": False, "error": str(exc)}
        ready = all(c["ok"] for c in checks.values())
        return {"region": self.region, "ready": ready, "role": role, "checks": checks}

    def readings(self) -> dict[str, Any]:
        parts = lag_report(self.settings, self.region)
        return {
            "index_lag": sum(p.lag for p in parts),
            "applied": {p.partition: p.committed for p in parts if p.committed is not None},
            "dialog_lag": self.dialog_log.lag(),
            "active": self.role.current().region == self.region,
        }

    def erase(self, session_id: str, reason: str = "") -> dict[str, Any]:
        """Erase a customer's conversation in every region (right to be forgotten): written like a
        turn, by the active region only. The session's key goes from this region's store at once
        (the log's copies of its events can no longer be opened here), from every other region's
        when its worker folds the erasure (dialog/keys.py says how long that can take)."""
        if self.rejoining.is_set():
            raise NotCaughtUp(f"region {self.region} is rejoining: it takes no turn and no erasure yet")
        with self._turn_lock, self.role.writing() as active:
            manager, _knowledge = self._writer(active)
            known = manager.state(session_id).last_seq > 0
            tombstone = manager.erase(session_id, reason)
            # Under the turn lock: the key ring's connection is the turns' (a transaction each).
            self.store.keyring.erase([session_id])
        return {"region": self.region, "session_id": session_id, "known": known, "seq": tombstone.last_seq}

    def fenced_report(self) -> list[dict[str, Any]]:
        """The conflict report: turns a promotion's cut set aside (dialog/fence.py)."""
        fenced = self.store.fenced()
        keys = lookup(self.store.keyring.get_many({e.session_id for e in fenced}))
        return [e.to_dict(keys) for e in fenced]

    def close(self) -> None:
        self._stop.set()
        self._index.close()
        self.dialog_log.close()
        self.role.close()
        self._publisher.close()
        self._control.close()
        if self._acks is not None:
            self._acks.close()
        self.store.close()


__all__ = ["RegionService", "ServeError", "TurnResult"]
