"""The fence on its real path, on the embedded stack: no shared database, each region deciding
from its own store and the promotions replication brings it.

* a turn in a region that lost its role while the turn was being computed is refused before a
  single event of it is published;
* a promotion is refused while the region lags its own log (nothing changes);
* a newly promoted region answers 503 until its store has folded everything below the cut, then
  takes turns.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest

from dialog.events import UserUtterance
from dialog.kafka_io import KafkaPublisher
from regionsync.kafka import fetch_ends
from regionsync.settings import Settings
from serve.errors import Fenced, NotCaughtUp
from serve.publishers import FencedPublisher
from serve.region import RegionService
from serve.roles import RegionRole
from stack import procs, stack

from .conftest import api, wait_for
from .test_service import promote, wait_roles

pytestmark = pytest.mark.integration


@pytest.fixture
def east_active_again(settings: Settings, urls: dict[str, str]) -> Iterator[None]:
    yield
    back = promote(settings, urls["east"], force=True)
    assert back.status_code == 200, back.text
    wait_roles(urls, "east")


def dialog_ends(settings: Settings, region: str) -> dict[tuple[str, int], int]:
    topic = settings.dialog_topic
    return fetch_ends(settings.kafka(region), [(topic, p) for p in range(settings.topic_partitions)])


def test_a_turn_in_a_region_that_lost_its_role_is_refused_before_it_is_published(
    settings: Settings, urls: dict[str, str], east_active_again: None
) -> None:
    east = settings.for_region("east")
    role = RegionRole(east, "east")
    publisher = FencedPublisher(KafkaPublisher(east), role, None)
    before = dialog_ends(settings, "east")
    session = f"fenced-{secrets.token_hex(4)}"
    outcome: dict[str, object] = {}
    holding = threading.Event()
    go_on = threading.Event()

    def turn() -> None:
        try:
            with role.writing() as active:  # the row held shared: this region is active
                outcome["epoch"] = active.epoch
                holding.set()
                go_on.wait(120)  # the turn is being computed (a slow handler, a long model call)
                publisher.publish([UserUtterance(session_id=session, seq=1, event_id=secrets.token_hex(8),
                                                 ts_ms=int(time.time() * 1000), origin="east",
                                                 epoch=active.epoch, text="written too late")])
            outcome["published"] = True
        except Fenced as exc:
            outcome["fenced"] = str(exc)

    worker = threading.Thread(target=turn)
    worker.start()
    try:
        assert holding.wait(30)
        # Meanwhile north is promoted; replication brings the promotion to east, whose dialog
        # worker records it: it waits for the turn holding the row, then fences its session.
        promoted = promote(settings, urls["north"])
        assert promoted.status_code == 200, promoted.text
        wait_for(lambda: api.get(f"{urls['east']}/readyz", timeout=30).json()["role"] == "standby", 60,
                 "east to hold north active")
    finally:
        go_on.set()
        worker.join(60)
        role.close()
    assert "fenced" in outcome and "published" not in outcome, outcome
    assert dialog_ends(settings, "east") == before  # not one event of the turn reached the log


def test_a_promotion_is_refused_while_the_region_lags_its_log(settings: Settings, urls: dict[str, str]) -> None:
    dialog_north = stack.dialog_name("north")
    procs.stop(settings.state_dir, dialog_north)
    service = None
    try:
        session = f"lag-{secrets.token_hex(4)}"
        assert api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "hello"},
                             timeout=30).status_code == 200
        # In process, with no lag allowed: north's broker has the turn (replicated), its store has not.
        strict = settings.model_copy(update={"ready_max_dialog_lag": 0})
        service = RegionService(strict, "north", background=False)
        wait_for(lambda: service.dialog_log.lag() > 0, 30, "the turn to reach north's broker")
        before = RegionRole(strict, "north").promotions()
        with pytest.raises(NotCaughtUp, match="behind"):
            service.promote()
        assert RegionRole(strict, "north").promotions() == before  # nothing changed
        assert RegionRole(strict, "north").current().region == "east"
    finally:
        if service is not None:
            service.close()
        stack.start_dialog_worker(settings, "north")


def test_a_newly_promoted_region_answers_503_until_it_caught_up(
    settings: Settings, urls: dict[str, str], east_active_again: None
) -> None:
    dialog_north = stack.dialog_name("north")
    session = f"catchup-{secrets.token_hex(4)}"
    assert api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "hello"},
                         timeout=30).status_code == 200
    wait_for(lambda: api.get(f"{urls['north']}/sessions/{session}", timeout=10).status_code == 200, 60,
             "the session in north")
    procs.stop(settings.state_dir, dialog_north)
    service = None
    try:
        second = api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "again"}, timeout=30)
        assert second.status_code == 200
        quick = settings.model_copy(update={"promote_timeout_s": 2.0})
        service = RegionService(quick, "north", background=False)
        wait_for(lambda: service.dialog_log.lag() > 0, 30, "the second turn to reach north's broker")
        with pytest.raises(NotCaughtUp, match="not folded"):
            service.promote()  # recorded, but north's store is behind its cut
        assert RegionRole(quick, "north").current().region == "north"
        refused = api.post(f"{urls['north']}/sessions/{session}/turns", json={"text": "third"}, timeout=60)
        assert refused.status_code == 503, refused.text
        stack.start_dialog_worker(settings, "north")
        wait_for(lambda: api.post(f"{urls['north']}/sessions/{session}/turns", json={"text": "third"},
                                       timeout=60).status_code == 200, 60, "north to take turns once caught up")
        state = api.get(f"{urls['north']}/sessions/{session}", timeout=10).json()
        assert [t["text"] for t in state["turns"] if t["role"] == "user"] == ["hello", "again", "third"]
    finally:
        if service is not None:
            service.close()
        if not stack.alive(settings, dialog_north):
            stack.start_dialog_worker(settings, "north")
