"""One region's service logic, without HTTP: search, answers, dialog turns, readiness, promotion.

Held once per process. The embedding model is loaded on first use and kept (it takes seconds);
dialog turns are serialised (one writer per session set, and the dialog manager is not
thread-safe), searches run concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dialog.events import DialogEvent
from dialog.kafka_io import KafkaPublisher
from dialog.manager import DialogManager, Reply
from dialog.state import SessionState
from dialog.store import PostgresStore
from embedding.embedder import Embedder
from indexer.lag import lag_report
from indexer.sink import Hit
from regionsync.settings import Settings
from serve.answers import ChatComposer, Composed, make_composer
from serve.dialog_log import DialogLog
from serve.errors import NotCaughtUp, UnknownSession
from serve.factory import make_embedder, make_region_sink
from serve.handlers import INQUIRE_ORDER, KNOWLEDGE, KnowledgeHandler, demo_order_lookup
from serve.roles import Active, ActiveRegionStore

log = logging.getLogger(__name__)

# A turn on a freshly promoted or restarted active region waits at most this long for its
# dialog state to reach the end of the log before answering 503 (retry).
TURN_CATCH_UP_S = 5.0


@dataclass(frozen=True)
class TurnResult:
    reply: Reply
    state: SessionState
    answer: Composed | None  # the knowledge answer, when the knowledge handler replied


class FencedPublisher:
    """Publishes a turn's events only while this region's writer session still holds the
    active-region row (a promotion elsewhere may have fenced it while the turn was computed)."""

    def __init__(self, inner: KafkaPublisher, roles: ActiveRegionStore) -> None:
        self._inner = inner
        self._roles = roles

    def publish(self, events: Sequence[DialogEvent]) -> Any:
        self._roles.check_writer()
        return self._inner.publish(events)


class RegionService:
    def __init__(self, settings: Settings, region: str, embedder: Embedder | None = None) -> None:
        settings.serve_port(region)  # unknown region: fail now, naming the configured ones
        self.settings = settings
        self.region = region
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._sink = make_region_sink(settings, region)
        self.store = PostgresStore.for_region(settings, region)
        self.dialog_log = DialogLog(settings, region, self.store.offsets)
        self.roles = ActiveRegionStore(settings)
        self._publisher = KafkaPublisher(settings)
        self.chat: ChatComposer | None  # the chat endpoint composing answers, when configured
        self._compose, self.chat = make_composer(settings)
        self._turn_lock = threading.Lock()
        self._manager: DialogManager | None = None
        self._knowledge: KnowledgeHandler | None = None
        self._epoch: int | None = None  # the epoch whose turns this region may write (caught up)

    # ------------------------------------------------------------------ knowledge
    def embedder(self) -> Embedder:
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = make_embedder(self.settings)
            return self._embedder

    def search(self, query: str, k: int) -> list[Hit]:
        vector = self.embedder().embed([query])[0]
        return self._sink.search(vector, k)

    def answer(self, question: str, k: int = 5) -> Composed:
        composed: Composed = self._compose(question, self.search(question, k))
        return composed

    # ------------------------------------------------------------------ dialog
    def turn(self, session_id: str, message: Mapping[str, Any]) -> TurnResult:
        """Write one turn (409 via NotActive on a standby; 503 via NotCaughtUp while catching up)."""
        with self._turn_lock, self.roles.writing(self.region) as active:
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
            # New role (promotion, restart): the store must hold the whole log before we write,
            # and a manager of an older epoch may remember states another region has moved on.
            self.dialog_log.wait_caught_up(TURN_CATCH_UP_S)
            self._manager, self._knowledge = self._new_manager()
            self._epoch = active.epoch
        return self._manager, self._knowledge

    def _new_manager(self) -> tuple[DialogManager, KnowledgeHandler]:
        manager = DialogManager(FencedPublisher(self._publisher, self.roles), sessions=self.store, region=self.region)
        knowledge = KnowledgeHandler(lambda text: self.answer(text))
        manager.register_handler(KNOWLEDGE, knowledge)
        from dialog.handlers.order_status import InquireOrderHandler

        manager.register_handler(INQUIRE_ORDER, InquireOrderHandler(demo_order_lookup))
        return manager, knowledge

    # ------------------------------------------------------------------ role
    def promote(self) -> dict[str, Any]:
        """Make this region the active one: nearly caught up first (so the old region's last turns
        are in), then the flip, then exactly to the end of the log, then turns are accepted. The
        answer says how long each step took (the failover drill reports where promotion time goes)."""
        t0 = time.perf_counter()
        lag = self.dialog_log.lag()
        if lag > self.settings.ready_max_dialog_lag:
            raise NotCaughtUp(f"region {self.region} is {lag} dialog events behind; not promoting (nothing changed)")
        t1 = time.perf_counter()
        plan = self.roles.promote(self.region)
        t2 = time.perf_counter()
        with self._turn_lock:
            t3 = time.perf_counter()
            self.dialog_log.wait_caught_up(self.settings.promote_timeout_s)
            self._manager, self._knowledge = self._new_manager()
            self._epoch = plan.after.epoch
        t4 = time.perf_counter()
        return {
            "region": self.region,
            "active": plan.after.region,
            "epoch": plan.after.epoch,
            "previous": plan.before.region if plan.changed else plan.after.previous,
            "changed": plan.changed,
            "dialog_positions": {str(p): o for p, o in sorted(self.store.offsets().items())},
            "seconds": {"lag_check": round(t1 - t0, 4), "flip": round(t2 - t1, 4),
                        "turn_in_flight": round(t3 - t2, 4), "catch_up": round(t4 - t3, 4)},
        }

    # ------------------------------------------------------------------ readiness and metrics
    def readiness(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            self._sink.ping()
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
            active = self.roles.current()
            role = "active" if active.region == self.region else "standby"
            checks["role"] = {"ok": True, "active_region": active.region, "epoch": active.epoch}
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
            "active": self.roles.current().region == self.region,
        }

    def close(self) -> None:
        self._sink.close()
        self.dialog_log.close()
        self.roles.close()
        self._publisher.close()
        self.store.close()
