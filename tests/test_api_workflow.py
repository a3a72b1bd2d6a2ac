"""The workflow over HTTP, on SQLite and PostgreSQL: one unit case from the opening of the
pledge stage to its commendation, objections, bulk actions, and who may see and do what
(plus one engine-level race the decide endpoint relies on: the quota under concurrency)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from models import Account, Case, EvaluationRound, Organization, Period, Position
from service.clock import FixedClock, start_of_day
from service.errors import TransitionRefused
from service.workflow import engine
from tests import builders as b
from tests.apiclient import bearer, login, make_client, open_2010
from tests.conftest import Database

API = "/api/v1"
FLOW = "flow"
UNIT = "supply-marketing"
SECRETARY = f"{UNIT}.secretary"   # unit staff: the subject of the unit's case
LEADER = "office.deputy"          # a superior of every enterprise committee
DECIDER = "office.admin"
OUTSIDER = "telecom.secretary"    # signed in, unrelated to the unit
ITEMS = [{"criterion": c, "target": f"target {i}", "measures": f"measures {i}",
          "deadline_on": "2010-11-01"}
         for i, c in enumerate(("political_leadership", "development_drive"))]


class Api:
    """The real app over HTTP, with a bearer token per username (or the flow) on demand."""

    def __init__(self, db: Database, clock: FixedClock) -> None:
        self.db, self.clock = db, clock
        self.client: TestClient = make_client(db, clock)
        self._tokens: dict[str, dict[str, str]] = {}

    def auth(self, who: str | None) -> dict[str, str]:
        if who is None:
            return {}
        if who not in self._tokens:
            self._tokens[who] = (bearer(self.db, flow="stage-opener") if who == FLOW
                                 else bearer(self.db, who))
        return self._tokens[who]

    def call(self, method: str, path: str, who: str | None, expect: int, *,
             json: Any = None, headers: dict[str, str] | None = None) -> Response:
        response = self.client.request(method, API + path, json=json,
                                       headers={**self.auth(who), **(headers or {})})
        assert response.status_code == expect, (method, path, response.text)
        if expect >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
        return response

    def post(self, path: str, who: str | None, expect: int = 200, **kw: Any) -> Response:
        return self.call("POST", path, who, expect, **kw)

    def get(self, path: str, who: str | None, expect: int = 200, **kw: Any) -> Response:
        return self.call("GET", path, who, expect, **kw)

    def refused(self, method: str, path: str, who: str | None, expect: int = 409,
                **kw: Any) -> set[str]:
        """The reason codes of a refusal."""
        response = self.call(method, path, who, expect, **kw)
        return {r["code"] for r in response.json().get("reasons", [])}

    def bulk(self, action: str, case_ids: list[int], who: str = FLOW,
             expect: int = 200) -> dict[str, Any]:
        return self.post("/bulk/actions", who, expect,
                         json={"action": action, "case_ids": case_ids}).json()


def _api(db: Database) -> Api:
    clock = FixedClock()
    open_2010(db, clock)
    return Api(db, clock)


def _unit_case(db: Database, code: str) -> int:
    with db.factory() as s:
        return s.scalar(sa.select(Case.id).join(Organization, Organization.id ==
                                                Case.organization_id)
                        .where(Organization.code == code, Case.subject_kind == "organization"))


def _period(db: Database) -> Period:
    with db.factory() as s:
        return s.scalars(sa.select(Period).where(Period.code == "2010")).one()


def _usernames(db: Database, person_ids: list[int]) -> dict[int, str]:
    with db.factory() as s:
        return dict(s.execute(sa.select(Account.person_id, Account.username)
                              .where(Account.person_id.in_(person_ids))).all())


def _version(response: Response) -> int:
    body = response.json()
    assert response.headers["ETag"] == f'"v{body["version"]}"'
    return body["version"]


def _pledge_under_notice(api: Api, case_id: int, subject: str) -> None:
    """Open, draft, submit, approve and publish a unit's pledge, over HTTP."""
    assert api.bulk("open_pledge", [case_id])["results"][0]["ok"]
    api.call("PUT", f"/cases/{case_id}/pledge", subject, 200,
             json={"summary": "we pledge", "items": ITEMS})
    api.post(f"/cases/{case_id}/pledge/submit", subject)
    api.post(f"/cases/{case_id}/pledge/approve", LEADER)
    api.post(f"/cases/{case_id}/pledge/publish", FLOW)


def test_a_unit_case_walks_from_pledge_to_commendation_over_http(fresh_db):
    api, period = _api(fresh_db), _period(fresh_db)
    case_id = _unit_case(fresh_db, UNIT)
    _pledge(api, case_id)
    _review(api, case_id, period)
    voters = _evaluate(api, case_id, period)
    _disclose(api, case_id, voters)
    _commend(api, case_id)


def _pledge(api: Api, case_id: int) -> None:
    """Pledge: the flow opens the stage in bulk; every step answers with the new ETag."""
    opened = api.bulk("open_pledge", [case_id])
    assert opened["results"] == [{"case_id": case_id, "ok": True, "version": 2, "event_seq":
                                  opened["results"][0]["event_seq"],
                                  "to": {"stage": "pledge", "status": "drafting"}}]
    assert api.get(f"/cases/{case_id}", SECRETARY).headers["ETag"] == '"v2"'
    edited = api.call("PUT", f"/cases/{case_id}/pledge", SECRETARY, 200,
                      json={"summary": "we pledge", "items": ITEMS}, headers={"If-Match": '"v2"'})
    assert _version(edited) == 3
    api.post(f"/cases/{case_id}/pledge/submit", SECRETARY, 412, headers={"If-Match": '"v2"'})
    submitted = api.post(f"/cases/{case_id}/pledge/submit", SECRETARY,
                         headers={"If-Match": '"v3"'})
    assert _version(submitted) == 4 and submitted.json()["to"]["status"] == "submitted"
    assert "role" in api.refused("POST", f"/cases/{case_id}/pledge/approve", SECRETARY)
    assert _version(api.post(f"/cases/{case_id}/pledge/approve", LEADER)) == 5
    assert api.post(f"/cases/{case_id}/pledge/publish", FLOW).json()["to"]["status"] == \
        "under_notice"
    api.clock.advance(days=7, hours=1)
    assert api.bulk("close_notice", [case_id])["results"][0]["to"]["status"] == "done"


def _review(api: Api, case_id: int, period: Period) -> None:
    """Review: scheduled, acknowledged, then an ad hoc one; then the items are kept."""
    api.clock.set(start_of_day(period.review_opens_on))
    assert api.bulk("open_review", [case_id])["succeeded"] == 1
    review = {"achievements": "a", "problems": "p", "direction": "d",
              "ratings": {"political_leadership": "good"}}
    recorded = api.post(f"/cases/{case_id}/reviews", LEADER, json=review).json()
    assert (recorded["action"], recorded["to"]["status"]) == ("record_review", "recorded")
    api.post(f"/cases/{case_id}/reviews/acknowledge", SECRETARY,
             json={"rectification_plan": "fix it"})
    ad_hoc = api.post(f"/cases/{case_id}/reviews", LEADER, json=review).json()
    assert (ad_hoc["action"], ad_hoc["to"]["status"]) == ("record_ad_hoc_review", "acknowledged")
    reviews = api.get(f"/cases/{case_id}/reviews", SECRETARY).json()
    assert [(r["kind"], r["rectification_plan"]) for r in reviews] == [
        ("scheduled", "fix it"), ("ad_hoc", None)]
    api.get(f"/cases/{case_id}/reviews", OUTSIDER, 404)
    for item in api.get(f"/cases/{case_id}/pledge", SECRETARY).json()["items"]:
        api.post(f"/cases/{case_id}/pledge/items/{item['id']}/fulfilment", SECRETARY,
                 json={"status": "kept", "evidence": "minutes"})


def _evaluate(api: Api, case_id: int, period: Period) -> dict[int, str]:
    """Evaluation: every evaluator with an account votes; returns them by person id."""
    api.clock.set(start_of_day(period.evaluation_opens_on))
    assert api.post(f"/cases/{case_id}/round/open", FLOW).json()["to"]["status"] == "voting"
    round_ = api.get(f"/cases/{case_id}/round", SECRETARY).json()
    assert (round_["status"], round_["voted"], round_["tally"]) == ("open", 0, None)
    assert {o["label_zh"] for o in round_["options"]} >= {"满意", "不满意"}
    api.get(f"/cases/{case_id}/round/evaluators", SECRETARY, 403)
    evaluators = api.get(f"/cases/{case_id}/round/evaluators", FLOW).json()
    assert len(evaluators) == round_["assigned"] >= 3
    voters = _usernames(api.db, [e["person_id"] for e in evaluators])
    absent = [e["person_id"] for e in evaluators if e["person_id"] not in voters]
    assert absent, "the seed has a worker representative without an account"
    assignment = {"remove": absent}
    api.post(f"/cases/{case_id}/round/evaluators", SECRETARY, 409, json=assignment)
    version = _version(api.post(f"/cases/{case_id}/round/evaluators", DECIDER, json=assignment))
    answers = {"answers": {c["code"]: "satisfied" for c in round_["criteria"]}}
    first, *others, last = voters.values()
    api.post(f"/cases/{case_id}/round/ballot", first, 422, json=answers,
             headers={"Idempotency-Key": "ballot-1"})
    for username in (first, *others):
        cast = api.post(f"/cases/{case_id}/round/ballot", username, json=answers).json()
        assert (cast["version"], cast["to"]["status"]) == (version, "voting")  # unchanged
    assert "round_running" in api.refused("POST", f"/cases/{case_id}/round/close", FLOW)
    api.post(f"/cases/{case_id}/round/ballot", last, json=answers)
    assert "already_voted" in api.refused("POST", f"/cases/{case_id}/round/ballot", first,
                                          json=answers)
    api.post(f"/cases/{case_id}/round/ballot", SECRETARY, 409, json=answers)
    assert {e["person_id"]: e["voted"] for e in
            api.get(f"/cases/{case_id}/round/evaluators", FLOW).json()} == dict.fromkeys(
        voters, True)
    assert api.post(f"/cases/{case_id}/round/close", FLOW).json()["to"]["status"] == "tallied"
    assert api.get(f"/cases/{case_id}/round", SECRETARY).json()["tally"] is None
    api.post(f"/cases/{case_id}/round/announce", FLOW)
    return voters


def _disclose(api: Api, case_id: int, voters: dict[int, str]) -> None:
    """The tally: for the subject, not for an evaluator outside the "unit" scope, not at all
    for an unrelated user; and no round response ever carries answers."""
    mine = api.get(f"/cases/{case_id}/round", SECRETARY)
    assert mine.json()["results_visible"] and mine.json()["tally"]["overall_satisfaction"] == 1.0
    assert mine.json()["voted"] == len(voters) and mine.json()["disclosure_scope"] == "unit"
    first = next(iter(voters.values()))
    evaluator_view = api.get(f"/cases/{case_id}/round", first).json()
    assert evaluator_view["tally"] is None and evaluator_view["me"] == {"assigned": True,
                                                                        "voted": True}
    api.get(f"/cases/{case_id}/round", OUTSIDER, 404)
    for response in (mine, api.get(f"/cases/{case_id}/round", FLOW)):
        assert "answers" not in response.text and "ballot" not in response.text

    def tally_seen(scope: str, who: str) -> bool:
        with api.db.factory() as s, s.begin():
            s.execute(sa.update(EvaluationRound).where(EvaluationRound.case_id == case_id)
                      .values(disclosure_scope=scope))
        return api.get(f"/cases/{case_id}/round", who).json()["tally"] is not None

    assert not tally_seen("superior", SECRETARY) and tally_seen("superior", LEADER)
    assert tally_seen("public", first) and tally_seen("unit", SECRETARY)


def _commend(api: Api, case_id: int) -> None:
    """Commendation: select (not by an auditor), adjust, notice, recusal, decide."""
    api.post("/periods/2010/commendations/select", "auditor", 403)
    awards = api.post("/periods/2010/commendations/select", FLOW, 201).json()
    assert api.post("/periods/2010/commendations/select", DECIDER, 200).json() == awards
    [award] = awards
    [nomination] = award["nominations"]
    assert (award["award"], award["quota"], nomination["case_id"]) == (
        "advanced_organization", 1, case_id)
    assert nomination["shortlisted"] and nomination["reasons"][0]["code"] == "within_shortlist"
    assert nomination["reasons"][0]["zh"]
    assert api.get("/periods/2010/commendations", OUTSIDER).json() == []
    adjusted = api.post(f"/nominations/{nomination['nomination_id']}/adjust", DECIDER,
                        json={"shortlisted": True, "rationale": "kept every pledge item"})
    assert adjusted.json()["action"] == "adjust_nomination"
    api.post(f"/commendations/{award['id']}/notice", SECRETARY, 403)
    posted = api.post(f"/commendations/{award['id']}/notice", FLOW).json()
    assert posted["status"] == "under_notice" and posted["cases"] == 1
    api.post(f"/commendations/{award['id']}/notice", FLOW, 409)
    [public] = api.get("/periods/2010/commendations", OUTSIDER).json()
    assert [n["case_id"] for n in public["nominations"]] == [case_id]
    assert "reasons" not in public["nominations"][0] and "rank" not in public["nominations"][0]

    api.clock.set(api.clock.now() + timedelta(days=8))
    _make_office_admin(api.db, f"{UNIT}.b1.secretary")
    decide = f"/nominations/{nomination['nomination_id']}/decide"
    assert api.refused("POST", decide, f"{UNIT}.b1.secretary", json={"commend": True}) == {
        "recusal"}
    current = api.get(f"/cases/{case_id}", DECIDER).headers["ETag"]
    decided = api.post(decide, DECIDER, json={"commend": True, "comment": "well done"},
                       headers={"If-Match": current})
    assert decided.json()["to"] == {"stage": "closed", "status": "commended"}
    assert api.get(f"/cases/{case_id}", SECRETARY).headers["ETag"] == decided.headers["ETag"]
    [final] = api.get("/periods/2010/commendations", "auditor").json()
    assert final["status"] == "decided" and final["decided_at"]


def _make_office_admin(db: Database, username: str) -> None:
    """Give someone from a unit an admin seat in the campaign office (to test recusal)."""
    with db.factory() as s, s.begin():
        person_id = s.scalar(sa.select(Account.person_id).where(Account.username == username))
        office_id = s.scalar(sa.select(Organization.id).where(
            Organization.kind == "campaign_office"))
        s.add(Position(person_id=person_id, organization_id=office_id, role="admin"))


def test_an_anonymous_objection_is_filed_and_upheld(fresh_db):
    api = _api(fresh_db)
    case_id, other = _unit_case(fresh_db, "telecom"), _unit_case(fresh_db, UNIT)
    _pledge_under_notice(api, case_id, OUTSIDER)
    anonymous = {"body": "the targets were copied from last year", "contact": "138-0000"}
    filed = api.post(f"/cases/{case_id}/objections", None, json=anonymous).json()
    assert (filed["action"], filed["to"]["status"]) == ("file_objection", "under_notice")
    api.post(f"/cases/{other}/objections", None, 404, json=anonymous)
    api.get(f"/cases/{case_id}/objections", None, 404)

    [seen_by_office] = api.get(f"/cases/{case_id}/objections", DECIDER).json()
    [seen_by_subject] = api.get(f"/cases/{case_id}/objections", OUTSIDER).json()
    assert seen_by_office["contact"] == "138-0000" and seen_by_subject["contact"] is None
    objection = seen_by_office["id"]
    api.clock.advance(days=8)
    assert "open_objection" in api.refused("POST", f"/cases/{case_id}/pledge/close_notice", FLOW)
    api.post(f"/objections/{objection}/uphold", SECRETARY, 404, json={"comment": "x"})
    assert "comment_required" in api.refused("POST", f"/objections/{objection}/uphold",
                                             DECIDER, json={})
    upheld = api.post(f"/objections/{objection}/uphold", DECIDER,
                      json={"comment": "targets must be new"}).json()
    assert upheld["to"] == {"stage": "pledge", "status": "returned"}
    [resolved] = api.get(f"/cases/{case_id}/objections", OUTSIDER).json()
    assert (resolved["status"], resolved["resolution"]) == ("upheld", "targets must be new")
    api.post(f"/objections/{objection}/dismiss", DECIDER, 409, json={"comment": "late"})


def test_bulk_actions_answer_per_case_and_commit_what_was_allowed(fresh_db):
    """Also: bulk is for flows and office admins only, and period operations."""
    api = _api(fresh_db)
    unit, telecom = _unit_case(fresh_db, UNIT), _unit_case(fresh_db, "telecom")
    api.bulk("open_pledge", [telecom])
    result = api.bulk("open_pledge", [telecom, unit, 999_999, unit])
    by_case = {r["case_id"]: r for r in result["results"]}
    assert (result["succeeded"], result["refused"]) == (1, 2)
    assert by_case[unit]["ok"] and by_case[unit]["version"] == 2
    assert not by_case[telecom]["ok"]
    assert by_case[telecom]["reasons"][0]["code"] == "not_allowed_in_state"
    assert by_case[999_999]["problem"] == "not-found"
    assert api.get(f"/cases/{unit}", SECRETARY).json()["status"] == "drafting"

    for action, code in (("edit_pledge", "action_needs_input"), ("approve", "not_a_machine_action"),
                         ("nominate", "selection_action"), ("no_such", "unknown_action")):
        refused = api.post("/bulk/actions", FLOW, 422, json={"action": action, "case_ids": [unit]})
        assert code in {r["code"] for r in refused.json()["reasons"]}
    api.post("/bulk/actions", FLOW, 422, json={"action": "open_pledge", "case_ids": []})
    api.post("/bulk/actions", FLOW, 422,
             json={"action": "open_pledge", "case_ids": list(range(1, 1002))})
    api.bulk("open_pledge", [unit], who="auditor", expect=403)
    api.bulk("open_pledge", [unit], who=SECRETARY, expect=403)
    api.post("/bulk/actions", None, 401, json={"action": "open_pledge", "case_ids": [unit]})

    assert api.post("/periods/2010/open", DECIDER).json() == {
        "period": "2010", "status": "open", "cases_opened": 0}
    assert "period_not_ended" in api.refused("POST", "/periods/2010/rollover", FLOW)
    api.post("/periods/2010/rollover", "auditor", 403)
    api.post("/periods/nope/open", FLOW, 404)

    # A page user (session cookie) must send the CSRF token on unsafe requests.
    csrf = login(api.client, SECRETARY)
    path = f"{API}/cases/{unit}/pledge"
    assert api.client.put(path, json={"items": ITEMS}).status_code == 403
    assert api.client.put(path, json={"items": ITEMS}, headers=csrf).status_code == 200



def test_concurrent_decisions_never_exceed_the_quota(fresh_db):
    """Two deciders commend the last place of a quota at once: the second waits, then is
    refused (the selection row is locked before the commendations are counted)."""
    with fresh_db.factory() as s, s.begin():
        clock = b.clock_at(b.period(s).starts_on)
        b.opened_period(s, clock)
        cases = [b.unit_case(s, code) for code in (UNIT, "telecom")]
        for case in cases:
            b.drive(s, case, ("evaluation", "announced"), clock)
        b.drive(s, cases[0], ("commendation", "under_notice"), clock)  # both go under notice
        ids, office = [c.id for c in cases], b.office(s)
    clock.advance(days=8)
    decided = threading.Event()

    def decide(case_id: int, hold: float = 0.0) -> None:
        with fresh_db.factory() as s, s.begin():
            engine.apply(s, case_id=case_id, action="decide", actor=office, clock=clock,
                         data={"commend": True})
            decided.set()
            time.sleep(hold)

    first = threading.Thread(target=decide, args=(ids[0], 0.5))
    first.start()
    assert decided.wait(30)
    with pytest.raises(TransitionRefused) as refused:
        decide(ids[1])
    first.join()
    assert "quota_full" in {r.code for r in refused.value.reasons}
