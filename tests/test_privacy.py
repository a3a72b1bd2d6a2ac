"""Who voted stays with those who run the round; carried-over items keep their link."""

from __future__ import annotations

import sqlalchemy as sa

from models import EvaluatorAssignment, PledgeItem
from service.clock import FixedClock
from service.periods import roll_over
from tests import builders as b
from tests.apiclient import bearer, make_client


def test_the_timeline_hides_voters_from_the_subject_but_not_from_the_office(fresh_db):
    clock = FixedClock()
    with fresh_db.factory() as s, s.begin():
        b.opened_period(s, clock)
        case = b.unit_case(s, "supply-marketing")
        b.drive(s, case, ("evaluation", "voting"), clock)
        b.vote_all(s, case, clock, limit=2)
        voters = set(s.scalars(sa.select(EvaluatorAssignment.person_id).where(
            EvaluatorAssignment.voted_at.is_not(None))))
        case_id = case.id
    client = make_client(fresh_db, clock)

    def ballot_actors(who: str) -> list[int | None]:
        response = client.get(f"/api/v1/cases/{case_id}/events?limit=1000",
                              headers=bearer(fresh_db, who))
        assert response.status_code == 200, response.text
        return [e["actor_person_id"] for e in response.json()["items"]
                if e["action"] == "cast_ballot"]

    assert ballot_actors("supply-marketing.secretary") == [None, None]   # the subject
    assert set(ballot_actors("office.admin")) == voters                  # runs the round


def test_editing_a_carried_over_draft_keeps_the_link_to_last_period(session):
    clock = FixedClock()
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, ("pledge", "done"), clock)  # items stay pending: they carry over
    clock.set(b.period(session).ends_on)
    clock.advance(days=2)
    roll_over(session, "2010", actor=b.FLOW, clock=clock)
    new_case = b.unit_case(session, "supply-marketing", "2011-h1")
    b.act(session, new_case, "open_pledge", b.FLOW, clock)
    carried = b.pledge_items(session, new_case)
    assert carried and all(i.carried_over_from_id for i in carried)
    items = [{"criterion": None, "target": i.target, "measures": "new measures",
              "deadline_on": "2011-05-01"} for i in carried] + [
        {"target": "a brand-new target", "measures": "m", "deadline_on": "2011-05-01"}]
    b.act(session, new_case, "edit_pledge", b.subject_of(session, new_case), clock,
          data={"summary": "s", "items": items})
    after = session.scalars(sa.select(PledgeItem).where(
        PledgeItem.pledge_id == carried[0].pledge_id).order_by(PledgeItem.position)).all()
    assert [i.carried_over_from_id is not None for i in after] == [True] * len(carried) + [False]
