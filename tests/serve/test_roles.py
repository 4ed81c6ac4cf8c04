"""The active-region decision the service makes on every turn, without Postgres."""

from __future__ import annotations

import pytest

from serve.errors import NotActive, ServeError
from serve.roles import Active, may_write


def test_the_active_region_may_write() -> None:
    may_write(Active("east", 1), "east")  # no exception


def test_a_standby_is_refused_naming_the_active_region() -> None:
    with pytest.raises(NotActive) as info:
        may_write(Active("east", 3, "north"), "north")
    assert info.value.region == "north" and info.value.active == "east"
    assert str(info.value) == "region north is standby; the active region is east"
    assert isinstance(info.value, ServeError)  # the package's root: callers catch one type
