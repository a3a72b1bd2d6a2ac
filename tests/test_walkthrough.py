"""A unit's and a member's case walk every step of the table, on both databases."""

from __future__ import annotations

import pytest

from service import history
from tests import builders as b


@pytest.mark.parametrize("target", b.ALL_STATES, ids=lambda s: f"{s[0]}.{s[1]}")
def test_a_unit_case_reaches_every_state_through_the_engine(session, target):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, target, clock)
    assert (case.stage, case.status) == target
    assert history.verify(session) is None
