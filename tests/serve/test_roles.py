"""The active-region decisions, without Postgres: who may write turns, and what a promotion does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.errors import NotActive, ServeError
from serve.roles import Active, may_write, promotion

REGIONS = ("east", "north", "west")


def test_the_active_region_may_write() -> None:
    may_write(Active("east", 1), "east")  # no exception


def test_a_standby_is_refused_naming_the_active_region() -> None:
    with pytest.raises(NotActive) as info:
        may_write(Active("east", 3, "north"), "north")
    assert info.value.region == "north" and info.value.active == "east"
    assert str(info.value) == "region north is standby; the active region is east"
    assert isinstance(info.value, ServeError)  # the package's root: callers catch one type


def test_promoting_another_region_moves_the_role_and_bumps_the_epoch() -> None:
    plan = promotion(Active("east", 4, "north"), "north")
    assert plan.changed
    assert plan.before == Active("east", 4, "north")
    assert plan.after == Active("north", 5, "east")


def test_promoting_the_active_region_again_changes_nothing() -> None:
    current = Active("north", 5, "east")
    plan = promotion(current, "north")
    assert not plan.changed
    assert plan.before is current and plan.after is current


@given(st.lists(st.sampled_from(REGIONS), max_size=30))
def test_any_sequence_of_promotions_leaves_exactly_one_writer(sequence: list[str]) -> None:
    """The fencing the row gives: after every promotion exactly one region may write, the epoch
    grows exactly when the role moved, and the region promoted last is the writer."""
    active = Active(REGIONS[0], 1)
    for region in sequence:
        plan = promotion(active, region)
        assert plan.after.region == region
        assert plan.after.epoch == active.epoch + (1 if active.region != region else 0)
        assert plan.changed == (active.region != region)
        writers = []
        for candidate in REGIONS:
            try:
                may_write(plan.after, candidate)
                writers.append(candidate)
            except NotActive as exc:
                assert exc.active == region
        assert writers == [region]
        active = plan.after
