"""Reference data, people, the public bulletin and the inbox over HTTP — and that a user of one
unit can neither read nor act on another unit's case, whatever id they send.

Cases are walked through the engine with the builders in committed sessions; the HTTP calls
go to the real app on the same database, with the same clock.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import sqlalchemy as sa

from models import Case, Commendation, EvaluationRound, Event, Organization, Person, Position
from service import commendation
from service.clock import FixedClock, start_of_day
from tests import builders as b
from tests.apiclient import bearer, login, make_client, open_2010


def _id_of(fresh_db, username: str) -> int:
    with fresh_db.factory() as s:
        return b.person(s, username).id


def _all_pages(client, url: str, headers: dict) -> list[dict]:
    items, after = [], 0
    while True:
        page = client.get(url, params={"after": after, "limit": 40}, headers=headers).json()
        items += page["items"]
        if page["next_after"] is None:
            return items
        after = page["next_after"]


# --- reference data ----------------------------------------------------------------------------

def test_organization_tree_periods_and_criteria_are_public(fresh_db):
    client = make_client(fresh_db)
    flat = client.get("/api/v1/organizations")
    assert flat.status_code == 200, flat.text
    orgs = {o["code"]: o for o in flat.json()}
    office = orgs["office"]
    assert (office["kind"], office["depth"], office["parent_id"]) == ("campaign_office", 0, None)
    committees = [o for o in orgs.values() if o["parent_id"] == office["id"]]
    assert len(committees) == 8
    assert all(o["kind"] == "committee" and o["depth"] == 1 for o in committees)
    for unit in committees:
        for branch in ("b1", "b2"):
            child = orgs[f"{unit['code']}.{branch}"]
            assert (child["parent_id"], child["depth"], child["kind"]) == (unit["id"], 2, "branch")
    assert orgs["post.g1.b1"]["depth"] == 3
    assert "children" not in flat.json()[0]

    nested = client.get("/api/v1/organizations", params={"nested": "true"}).json()
    assert [root["code"] for root in nested] == ["office"]
    assert len(nested[0]["children"]) == 8
    post = next(c for c in nested[0]["children"] if c["code"] == "post")
    assert {c["code"] for c in post["children"]} == {"post.b1", "post.b2", "post.g1"}

    detail = client.get(f"/api/v1/organizations/{orgs['post.g1.b1']['id']}").json()
    assert detail["ancestor_ids"] == [office["id"], orgs["post"]["id"], orgs["post.g1"]["id"]]
    assert client.get("/api/v1/organizations/999999").status_code == 404

    periods = client.get("/api/v1/periods").json()
    assert [p["code"] for p in periods] == ["2010", "2011-h1", "2011-2012"]
    first = client.get(f"/api/v1/periods/{periods[0]['code']}").json()
    assert first["calendar"]["starts_on"] == "2010-06-01"
    assert first["calendar"]["ends_on"] == "2010-12-31"
    assert set(first["calendar"]) >= {"pledge_due_on", "review_opens_on", "review_due_on",
                                      "evaluation_opens_on", "evaluation_due_on",
                                      "commendation_on"}
    assert first["rules"]["notice_days"] == 7 and first["rules"]["scale"] == "four_level"
    assert [o["code"] for o in first["scale_options"]][0] == "satisfied"
    assert periods[-1]["calendar"]["ends_on"] == "2012-11-07"
    missing = client.get("/api/v1/periods/1999")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")

    sets = {s["code"]: s for s in client.get("/api/v1/criteria-sets").json()}
    four = sets["four_strengths"]
    assert four["applies_to"] == "organization" and len(four["criteria"]) == 4
    assert [c["position"] for c in four["criteria"]] == sorted(c["position"]
                                                               for c in four["criteria"])
    assert four["criteria"][0]["code"] == "political_leadership"
    assert four["criteria"][0]["name_zh"] and four["criteria"][0]["description_zh"]
    members_only = client.get("/api/v1/criteria-sets", params={"applies_to": "member"}).json()
    assert members_only and all(s["applies_to"] == "member" for s in members_only)


def test_people_are_visible_within_the_enterprise_and_emails_only_to_the_office(fresh_db):
    client = make_client(fresh_db)
    assert client.get("/api/v1/people").status_code == 401
    me = _id_of(fresh_db, "supply-marketing.secretary")
    telecom_member = _id_of(fresh_db, "telecom.b1.m1")
    own_branch_member = _id_of(fresh_db, "supply-marketing.b1.m1")
    with fresh_db.factory() as s:
        telecom_people = set(s.scalars(sa.select(Person.id).join(
            Organization, Organization.id == Person.organization_id).where(
            Organization.code.startswith("telecom"))))
        sm_org = b.org(s, "supply-marketing").id
        sm_people = set(s.scalars(sa.select(Person.id).join(
            Organization, Organization.id == Person.organization_id).where(
            Organization.code.startswith("supply-marketing"))))

    secretary = bearer(fresh_db, "supply-marketing.secretary")
    seen = _all_pages(client, "/api/v1/people", secretary)
    assert {p["id"] for p in seen} == sm_people
    assert not telecom_people & {p["id"] for p in seen}
    assert client.get(f"/api/v1/people/{telecom_member}", headers=secretary).status_code == 404
    assert client.get("/api/v1/people/999999", headers=secretary).status_code == 404
    colleague = client.get(f"/api/v1/people/{own_branch_member}", headers=secretary).json()
    assert colleague["email"] is None and colleague["positions"]
    assert [p["email"] for p in seen if p["id"] == me] == \
        ["supply-marketing.secretary@example.org"]
    assert all(p["email"] is None for p in seen if p["id"] != me)
    text = client.get("/api/v1/people", headers=secretary).text
    assert "password" not in text and "argon2" not in text
    by_org = client.get("/api/v1/people", params={"organization_id": sm_org},
                        headers=secretary).json()["items"]
    assert by_org and all(p["organization_id"] == sm_org for p in by_org)

    member = bearer(fresh_db, "telecom.b1.m2")
    assert client.get(f"/api/v1/people/{telecom_member}", headers=member).status_code == 200
    assert client.get(f"/api/v1/people/{me}", headers=member).status_code == 404

    office = bearer(fresh_db, "office.admin")
    shown = client.get(f"/api/v1/people/{telecom_member}", headers=office).json()
    assert shown["email"] == "telecom.b1.m1@example.org"
    auditor = bearer(fresh_db, "auditor")
    assert client.get(f"/api/v1/people/{me}", headers=auditor).json()["email"]
    flow = bearer(fresh_db, flow="test")
    assert client.get(f"/api/v1/people/{me}", headers=flow).json()["email"] is None


# --- the bulletin --------------------------------------------------------------------------------

def _bulletin(client, **params) -> tuple[dict, str]:
    response = client.get("/api/v1/bulletin", params=params)
    assert response.status_code == 200, response.text
    return response.json(), response.text


def test_bulletin_shows_only_what_is_public(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    owner = _id_of(fresh_db, "telecom.clerk")
    with fresh_db.factory() as s, s.begin():
        posted = b.unit_case(s, "telecom")
        b.drive(s, posted, ("pledge", "drafting"), clock)
        b.act(s, posted, "edit_pledge", b.subject_of(s, posted), clock, data={
            "summary": "telecom pledge", "items": [
                {"criterion": "political_leadership", "target": "PUBLIC-TARGET",
                 "measures": "study sessions", "deadline_on": date(2010, 11, 1),
                 "owner_id": owner}]})
        b.act(s, posted, "submit", b.subject_of(s, posted), clock)
        b.drive(s, posted, ("pledge", "approved"), clock)
        draft = b.member_case(s, "telecom.b2.m2")
        b.drive(s, draft, ("pledge", "drafting"), clock)
        b.act(s, draft, "edit_pledge", b.subject_of(s, draft), clock, data={
            "summary": "DRAFT-SUMMARY", "items": [{"target": "DRAFT-TARGET"}]})
        posted_id = posted.id

    board, text = _bulletin(client)
    assert board["pledges_under_notice"] == [] and board["published_pledges"] == []
    assert "PUBLIC-TARGET" not in text and "DRAFT-" not in text

    with fresh_db.factory() as s, s.begin():
        b.act(s, s.get(Case, posted_id), "publish", b.FLOW, clock)
    board, text = _bulletin(client)
    (notice,) = board["pledges_under_notice"]
    assert notice["case_id"] == posted_id and notice["period"] == "2010"
    assert notice["subject"]["unit_name_zh"] and notice["subject"]["member_name"] is None
    assert notice["days_left"] == 7
    assert notice["objection_url"] == f"/api/v1/cases/{posted_id}/objections"
    assert notice["items"][0]["target"] == "PUBLIC-TARGET"
    assert "owner" not in text and str(owner) not in [str(v) for v in notice["items"][0].values()]

    clock.advance(days=2, hours=12)
    with fresh_db.factory() as s, s.begin():
        b.act(s, s.get(Case, posted_id), "file_objection", b.FLOW, clock, data={
            "body": "the targets are vague", "filed_by_name": "FILER-NAME",
            "contact": "filer@example.net"})
    board, text = _bulletin(client)
    assert board["pledges_under_notice"][0]["days_left"] == 5  # 4.5 days, rounded up
    for secret in ("FILER-NAME", "filer@example.net", "vague", "DRAFT-", "submitted_by"):
        assert secret not in text

    # A unit walks on through evaluation (results announced) into the shortlist.
    with fresh_db.factory() as s, s.begin():
        walker = b.unit_case(s, "supply-marketing")
        b.drive(s, walker, ("evaluation", "announced"), clock)
        walker_id = walker.id
    board, _ = _bulletin(client)
    assert board["announced_results"] == []  # disclosed to the unit only, by default
    assert [p["case_id"] for p in board["published_pledges"]] == [walker_id]
    with fresh_db.factory() as s, s.begin():
        s.execute(sa.update(EvaluationRound).where(EvaluationRound.case_id == walker_id)
                  .values(disclosure_scope="public"))
        b.drive(s, s.get(Case, walker_id), ("commendation", "under_notice"), clock)
    board, text = _bulletin(client)
    (result,) = board["announced_results"]
    assert result["case_id"] == walker_id
    assert result["participation"] == 1.0 and result["overall_satisfaction"] == 1.0
    assert [c["criterion"] for c in result["criteria"]][0] == "political_leadership"
    for ballot_data in ('"answers"', '"counts"', '"satisfied"', "ballot"):
        assert ballot_data not in text
    (shortlist,) = board["shortlists_under_notice"]
    assert shortlist["award"] == "advanced_organization" and shortlist["days_left"] == 7
    assert [(c["case_id"], c["rank"]) for c in shortlist["candidates"]] == [(walker_id, 1)]
    assert board["commended"] == []

    with fresh_db.factory() as s, s.begin():
        b.drive(s, s.get(Case, walker_id), ("closed", "commended"), clock)
        selection = s.scalars(sa.select(Commendation)).one()
        commendation.finish_if_decided(s, selection, actor=b.office(s), clock=clock)
    board, _ = _bulletin(client)
    assert board["shortlists_under_notice"] == []
    (decided,) = board["commended"]
    assert [c["case_id"] for c in decided["commended"]] == [walker_id]
    assert [p["case_id"] for p in board["published_pledges"]] == [walker_id]

    empty, _ = _bulletin(client, period="2011-h1")
    assert all(section == [] for section in empty.values())
    assert client.get("/api/v1/bulletin", params={"period": "1999"}).status_code == 404


# --- the inbox -----------------------------------------------------------------------------------

def _inbox(client, headers: dict, **params) -> dict:
    response = client.get("/api/v1/inbox", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_inbox_brings_the_draft_to_the_unit_and_the_submitted_pledge_to_its_superior(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    assert client.get("/api/v1/inbox").status_code == 401
    flow = client.get("/api/v1/inbox", headers=bearer(fresh_db, flow="test"))
    assert flow.status_code == 403
    assert flow.headers["content-type"].startswith("application/problem+json")
    with fresh_db.factory() as s, s.begin():
        case = b.drive(s, b.unit_case(s, "supply-marketing.b1"), ("pledge", "drafting"), clock)
        case_id = case.id

    csrf = login(client, "supply-marketing.b1.secretary")
    inbox = _inbox(client, {})
    assert [i["case"]["id"] for i in inbox["items"]] == [case_id]
    assert {"edit_pledge", "submit"} <= set(inbox["items"][0]["actions"])
    assert inbox["items"][0]["overdue"] is False and inbox["total"] == 1

    edit = client.put(f"/api/v1/cases/{case_id}/pledge", headers=csrf, json={
        "summary": "branch pledge", "items": [
            {"criterion": "political_leadership", "target": "t", "measures": "m",
             "deadline_on": "2010-11-01"}]})
    assert edit.status_code == 200, edit.text
    submit = client.post(f"/api/v1/cases/{case_id}/pledge/submit", headers=csrf)
    assert submit.status_code == 200, submit.text
    assert _inbox(client, {})["items"] == []  # waiting on the superior now

    superior = bearer(fresh_db, "supply-marketing.secretary")
    items = _inbox(client, superior)["items"]
    assert [i["case"]["id"] for i in items] == [case_id]
    assert set(items[0]["actions"]) == {"approve", "return"}
    assert items[0]["organization_name_en"]
    for bystander in ("office.admin", "telecom.secretary", "supply-marketing.b2.secretary"):
        ids = [i["case"]["id"] for i in _inbox(client, bearer(fresh_db, bystander))["items"]]
        assert case_id not in ids, bystander


def test_inbox_items_name_the_member_of_a_member_case_and_no_one_for_a_unit(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    with fresh_db.factory() as s, s.begin():
        member_case = b.drive(s, b.member_case(s, "supply-marketing.b1.m2"),
                              ("pledge", "submitted"), clock)
        unit_case = b.drive(s, b.unit_case(s, "supply-marketing.b2"), ("pledge", "submitted"),
                            clock)
        ids = member_case.id, unit_case.id
        name = b.person(s, "supply-marketing.b1.m2").name
    names = {i["case"]["id"]: i["member_name"] for i in _inbox(
        client, bearer(fresh_db, "supply-marketing.b1.secretary"))["items"]}
    names |= {i["case"]["id"]: i["member_name"] for i in _inbox(
        client, bearer(fresh_db, "supply-marketing.secretary"))["items"]}
    assert names[ids[0]] == name and names[ids[1]] is None


def test_inbox_lists_overdue_items_first(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    with fresh_db.factory() as s, s.begin():
        unit = b.drive(s, b.unit_case(s, "supply-marketing"), ("pledge", "drafting"), clock)
        own = b.drive(s, b.member_case(s, "supply-marketing.secretary"), ("pledge", "drafting"),
                      clock)
        branch = b.drive(s, b.unit_case(s, "supply-marketing.b1"), ("pledge", "submitted"),
                         clock)
        pledge_due = b.period(s).pledge_due_on
        ids = unit.id, own.id, branch.id
    secretary = bearer(fresh_db, "supply-marketing.secretary")

    before = _inbox(client, secretary)["items"]
    assert [i["overdue"] for i in before] == [False, False, False]
    assert [i["case"]["id"] for i in before] == [ids[0], ids[1], ids[2]]  # by due date, id

    clock.set(start_of_day(pledge_due + timedelta(days=3)))  # drafts late, approval not yet
    page = _inbox(client, secretary)
    assert page["total"] == 3
    assert [(i["case"]["id"], i["overdue"]) for i in page["items"]] == \
        [(ids[0], True), (ids[1], True), (ids[2], False)]
    assert page["items"][0]["due_at"] <= page["items"][1]["due_at"] < page["items"][2]["due_at"]
    second = _inbox(client, secretary, limit=1, offset=2)["items"]
    assert [i["case"]["id"] for i in second] == [ids[2]]
    assert client.get("/api/v1/inbox", headers=secretary,
                      params={"limit": 201}).status_code == 422


def test_inbox_reaches_evaluators_and_whoever_resolves_an_objection(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    office = bearer(fresh_db, "office.admin")
    with fresh_db.factory() as s, s.begin():
        posted = b.drive(s, b.unit_case(s, "telecom"), ("pledge", "under_notice"), clock)
        posted_id = posted.id
    assert _inbox(client, office)["items"] == []  # under notice, nothing to resolve yet
    with fresh_db.factory() as s, s.begin():
        b.act(s, s.get(Case, posted_id), "file_objection", b.FLOW, clock,
              data={"body": "the targets are vague"})
    (item,) = _inbox(client, office)["items"]
    assert item["case"]["id"] == posted_id
    assert item["actions"] == ["uphold_objection", "dismiss_objection"]

    with fresh_db.factory() as s, s.begin():
        voting = b.drive(s, b.unit_case(s, "supply-marketing"), ("evaluation", "voting"), clock)
        voting_id = voting.id
    evaluator = bearer(fresh_db, "supply-marketing.b1.m1")
    (ballot,) = _inbox(client, evaluator)["items"]
    assert (ballot["case"]["id"], ballot["actions"]) == (voting_id, ["cast_ballot"])
    assert ballot["due_at"] is not None
    with fresh_db.factory() as s, s.begin():
        b.act(s, s.get(Case, voting_id), "cast_ballot", b.actor(s, "supply-marketing.b1.m1"),
              clock, data={"answers": {"political_leadership": "satisfied"}})
    assert _inbox(client, evaluator)["items"] == []  # one ballot per evaluator


def test_the_inbox_follows_the_callers_positions_as_they_change(fresh_db):
    # The inbox keeps its candidate statement per (person, positions): a position gained or
    # given up must show at once.
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    with fresh_db.factory() as s, s.begin():
        case_id = b.drive(s, b.unit_case(s, "telecom.b1"), ("pledge", "submitted"), clock).id
        telecom = s.scalar(sa.select(Organization.id).where(Organization.code == "telecom"))
    person_id = _id_of(fresh_db, "supply-marketing.b1.m2")
    member = bearer(fresh_db, "supply-marketing.b1.m2")
    assert case_id not in [i["case"]["id"] for i in _inbox(client, member)["items"]]

    with fresh_db.factory() as s, s.begin():
        s.add(Position(person_id=person_id, organization_id=telecom, role="deputy"))
    (item,) = [i for i in _inbox(client, member)["items"] if i["case"]["id"] == case_id]
    assert set(item["actions"]) == {"approve", "return"}

    with fresh_db.factory() as s, s.begin():
        s.execute(sa.delete(Position).where(Position.person_id == person_id,
                                            Position.organization_id == telecom))
    assert case_id not in [i["case"]["id"] for i in _inbox(client, member)["items"]]


def test_the_kept_candidate_statements_hold_up_under_callers_in_many_threads(fresh_db,
                                                                           monkeypatch):
    # Requests run in a thread pool; with room for two statements, six callers in six threads
    # evict each other's all the time. Each must still get exactly their own candidates.
    from service.accounts import Principal
    from service.api.routes import inbox

    clock = FixedClock()
    open_2010(fresh_db, clock)
    units = ("supply-marketing.b1", "supply-marketing.b2", "telecom.b1", "telecom.b2")
    with fresh_db.factory() as s, s.begin():
        for unit in units:  # b1 drafting (a task of the unit), b2 submitted (of the superior)
            b.drive(s, b.unit_case(s, unit), ("pledge", "drafting" if unit.endswith("b1")
                                              else "submitted"), clock)
    people = [_id_of(fresh_db, f"{name}.secretary")
              for name in ("supply-marketing", "telecom", *units)]

    def candidates(person_id: int) -> list[int]:
        with fresh_db.factory() as s:
            return [row.id for row in inbox._candidates(s, Principal(person_id=person_id),
                                                        person_id)]

    expected = {person_id: candidates(person_id) for person_id in people}
    assert len({tuple(ids) for ids in expected.values() if ids}) == 4  # four callers differ
    monkeypatch.setattr(inbox, "_STATEMENTS", {})
    monkeypatch.setattr(inbox, "_STATEMENTS_KEPT", 2)
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(candidates, people * 20))
    assert got == [expected[person_id] for person_id in people * 20]
    assert len(inbox._STATEMENTS) <= 2


# --- object-level authorization ------------------------------------------------------------------

def test_a_user_of_one_unit_cannot_read_or_act_on_another_units_case(fresh_db):
    clock = FixedClock()
    client = make_client(fresh_db, clock)
    open_2010(fresh_db, clock)
    with fresh_db.factory() as s, s.begin():
        case = b.drive(s, b.unit_case(s, "telecom"), ("pledge", "drafting"), clock)
        b.act(s, case, "edit_pledge", b.subject_of(s, case), clock,
              data={"summary": "telecom", "items": b.items_for(case)})
        case_id, version = case.id, case.version
        events = b.event_count(s)

    outsider = bearer(fresh_db, "supply-marketing.secretary")
    for path in ("", "/pledge", "/events"):
        response = client.get(f"/api/v1/cases/{case_id}{path}", headers=outsider)
        assert response.status_code == 404, (path, response.text)
    listed = client.get("/api/v1/cases", params={"organization_id": case.organization_id},
                        headers=outsider).json()["items"]
    assert listed == []
    assert client.post(f"/api/v1/cases/{case_id}/pledge/submit",
                       headers=outsider).status_code == 404
    assert client.put(f"/api/v1/cases/{case_id}/pledge", headers=outsider,
                      json={"summary": "hijacked", "items": []}).status_code == 404
    with fresh_db.factory() as s:
        stored = s.get(Case, case_id)
        assert (stored.status, stored.version) == ("drafting", version)
        assert b.event_count(s) == events
        assert s.scalar(sa.select(sa.func.count()).select_from(Event).where(
            Event.case_id == case_id, Event.action == "submit")) == 0

    insider = bearer(fresh_db, "telecom.clerk")
    assert client.get(f"/api/v1/cases/{case_id}/pledge", headers=insider).status_code == 200
    assert client.post(f"/api/v1/cases/{case_id}/pledge/submit",
                       headers=insider).status_code == 200
