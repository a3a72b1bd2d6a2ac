"""A whole campaign period driven only through HTTP, on SQLite and PostgreSQL.

The subjects are the eight enterprise Party committees the 2010 notice was sent to (kind
``committee``). Everyone acts with their own bearer token. Setup issues them the way an
operator would (``pledgeflow tokens create``: one token per demo account, and a service token
for the flows) — signing ~50 people in over HTTP would spend most of the run in Argon2 (64 MiB,
3 passes per sign-in); the campaign office's admin still signs in over HTTP and creates their
token with ``POST /api/v1/tokens``, as a script would. After setup nothing touches the engine
or the database until the final audit check; the app's FixedClock is moved the way the
calendar would move.

1. The flow opens period 2010 and the committees' pledge stage (bulk).
2. Each committee's clerk drafts the pledge and its secretary submits it; the campaign office
   (the committees' superior) returns one, which is revised and resubmitted, and approves all.
3. The flow publishes the pledges and, once the notice window has passed, closes the notices.
4. On the review date the office reviews each committee; each secretary acknowledges with a
   rectification plan; the clerks keep the fulfilment ledger (one committee misses an item).
5. On the evaluation date the rounds open. Worker representatives without an account cannot
   sign in, so the office swaps each for a Party member of the same enterprise (``assign
   evaluators``) — voting through the emailed action link would need the link's token, which
   only the mail carries; swapping keeps the test on the API. Every evaluator then votes with
   their own token; the flow closes the rounds and announces the results.
6. The selection is run, its shortlist put under public notice, handed to the office after the
   window, and an office admin (not recused: no seat in any unit) decides every candidate,
   commending within the quota.
7. After the period's end the flow rolls 2010 over to 2011-h1.

Checked at the end: every committee case is closed as commended or not commended, no more
than the quota were commended, every other 2010 case (branches and members, never opened)
lapsed at rollover, 2011-h1 has its cases, ``GET /api/v1/cases?period=2010`` shows all of
that, and the audit chain verifies.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from models import Account
from service import accounts, history
from service.clock import FixedClock, start_of_day
from service.seed_data import UNITS
from service.seed_demo_data import demo_people
from tests.apiclient import DEMO_PASSWORD, bearer, make_client
from tests.conftest import Database

API = "/api/v1"
FLOW = "flow"
SUPERIOR = "office.deputy"   # a campaign-office admin: superior of every committee
DECIDER = "office.admin"     # decides the commendations (no seat in any unit: never recused)
AUDITOR = "auditor"
COMMITTEES = [unit.code for unit in UNITS]  # the notice's order
RETURNED = "commercial-assets"              # the pledge the office sends back once
NOT_KEPT = "urban-investment"               # misses a pledge item: not eligible
#: Evaluators who answer "dissatisfied" throughout, per committee (the others are satisfied):
#: satisfaction 1.0, .75, 1.0, .5, .75, .8 (of five), .25, 1.0 (of five).
DISSATISFIED = {"supply-marketing": 0, "commercial-assets": 1, "urban-investment": 0,
                "industrial-assets": 2, "dongfang-assets": 1, "post": 1, "telecom": 3,
                "power-supply": 0}
#: Eligible (kept every item, satisfaction >= 60%) and best ranked within the quota of two.
COMMENDED = {"supply-marketing", "power-supply"}


class Http:
    """The real app over HTTP; every caller acts with their own bearer token."""

    def __init__(self, db: Database, clock: FixedClock) -> None:
        self.clock = clock
        self.client: TestClient = make_client(db, clock)
        self.tokens = _issue_tokens(db)
        self.requests = 0
        self.tokens[DECIDER] = self._sign_in(DECIDER)

    def auth(self, who: str | None) -> dict[str, str]:
        return {} if who is None else self.tokens[who]

    def _sign_in(self, username: str) -> dict[str, str]:
        """Sign in (session cookie + CSRF token), then create an API token, as a script would."""
        signed_in = self.client.post(f"{API}/auth/login",
                                     json={"username": username, "password": DEMO_PASSWORD})
        assert signed_in.status_code == 200, (username, signed_in.text)
        created = self.client.post(f"{API}/tokens", json={"name": "whole-period test"},
                                   headers={"X-CSRF-Token": signed_in.json()["csrf_token"]})
        assert created.status_code == 201, (username, created.text)
        self.client.cookies.clear()  # from here on: the bearer token only
        self.requests += 2
        return {"Authorization": f"Bearer {created.json()['token']}"}

    def call(self, method: str, path: str, who: str | None, expect: int = 200, *,
             json: Any = None, params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Response:
        response = self.client.request(method, API + path, json=json, params=params,
                                       headers={**self.auth(who), **(headers or {})})
        self.requests += 1
        assert response.status_code == expect, (method, path, who, response.text)
        return response

    def get(self, path: str, who: str | None, expect: int = 200, **kw: Any) -> Any:
        return self.call("GET", path, who, expect, **kw).json()

    def post(self, path: str, who: str | None, expect: int = 200, **kw: Any) -> Any:
        return self.call("POST", path, who, expect, **kw).json()

    def bulk(self, action: str, case_ids: list[int]) -> dict[str, Any]:
        return self.post("/bulk/actions", FLOW, json={"action": action, "case_ids": case_ids})

    def pages(self, path: str, who: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list."""
        items, after = [], 0
        while True:
            page = self.get(path, who, params={**params, "after": after, "limit": 500})
            items += page["items"]
            if page["next_after"] is None:
                return items
            after = page["next_after"]


def _issue_tokens(db: Database) -> dict[str, dict[str, str]]:
    """Setup: a bearer token for every demo account and one for the flows (what ``pledgeflow
    tokens create`` does), in one transaction."""
    headers = {FLOW: bearer(db, flow="period-driver")}
    with db.factory() as session, session.begin():
        for username, account_id in session.execute(sa.select(Account.username, Account.id)):
            token, _ = accounts.create_token(session, name="whole-period test",
                                             now=FixedClock().now(), account_id=account_id)
            headers[username] = {"Authorization": f"Bearer {token}"}
    return headers


def test_eight_committees_walk_period_2010_over_http(fresh_db: Database) -> None:
    started = time.monotonic()
    clock = FixedClock()
    clock.set(date(2010, 6, 1))
    http = Http(fresh_db, clock)
    period = http.get("/periods/2010", None)
    calendar = {k: date.fromisoformat(v) for k, v in period["calendar"].items()}

    phases: dict[str, float] = {}

    def timed(name: str, step: Any, *args: Any) -> Any:
        begun = time.monotonic()
        try:
            return step(*args)
        finally:
            phases[name] = time.monotonic() - begun

    cases = timed("open", _open_period, http)
    timed("pledge", _pledge, http, cases)
    timed("review", _review, http, cases, calendar["review_opens_on"])
    timed("evaluation", _evaluate, http, cases, calendar["evaluation_opens_on"])
    quota = timed("commendation", _commend, http, cases, period["rules"]["notice_days"])
    timed("rollover", _roll_over, http, cases, quota)

    with fresh_db.factory() as session:
        assert history.verify(session) is None, "the audit chain is intact"
    print(f"[{fresh_db.backend}] period 2010 for {len(cases)} committees: {http.requests} "
          f"requests in {time.monotonic() - started:.1f}s ("
          + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items()) + ")")


def _open_period(http: Http) -> dict[str, int]:
    """The flow opens the period; returns each committee's case id."""
    opened = http.post("/periods/2010/open", FLOW)
    assert (opened["status"], opened["cases_opened"] > len(COMMITTEES)) == ("open", True)
    committees = {o["id"]: o["code"] for o in http.get("/organizations", None)
                  if o["kind"] == "committee"}
    assert sorted(committees.values()) == sorted(COMMITTEES)
    units = [c for c in http.pages("/cases", FLOW, period="2010", subject_kind="organization")
             if c["organization_id"] in committees]
    assert len(units) == len(COMMITTEES)
    assert {(c["stage"], c["status"]) for c in units} == {("pledge", "pending")}
    return {committees[c["organization_id"]]: c["id"] for c in units}


def _ok(result: dict[str, Any], count: int, status: str) -> None:
    assert (result["succeeded"], result["refused"]) == (count, 0), result
    assert {r["to"]["status"] for r in result["results"]} == {status}


def _pledge(http: Http, cases: dict[str, int]) -> None:
    """Draft, submit, return one, resubmit, approve; publish; close the notices."""
    http.clock.set(date(2010, 8, 20))  # the day after the notice was issued
    ids = sorted(cases.values())
    _ok(http.bulk("open_pledge", ids), len(ids), "drafting")
    [four_strengths] = [s for s in http.get("/criteria-sets", None,
                                            params={"applies_to": "organization"})
                        if s["code"] == "four_strengths"]
    criteria = [c["code"] for c in four_strengths["criteria"]]

    def items(code: str, extra: int = 0) -> list[dict[str, Any]]:
        return [{"criterion": criteria[i % len(criteria)], "target": f"{code} target {i + 1}",
                 "measures": f"measures {i + 1}", "deadline_on": "2010-11-30",
                 "assessment_standard": "minutes and records"} for i in range(2 + extra)]

    for code, case_id in cases.items():
        etag = http.call("GET", f"/cases/{case_id}", f"{code}.clerk").headers["ETag"]
        edited = http.call("PUT", f"/cases/{case_id}/pledge", f"{code}.clerk",
                           json={"summary": f"{code} pledges for 2010", "items": items(code)},
                           headers={"If-Match": etag})
        submitted = http.post(f"/cases/{case_id}/pledge/submit", f"{code}.secretary",
                              headers={"If-Match": edited.headers["ETag"]})
        assert submitted["to"] == {"stage": "pledge", "status": "submitted"}

    returned = cases[RETURNED]
    reasons = {r["code"] for r in http.post(f"/cases/{returned}/pledge/return", SUPERIOR, 409,
                                            json={})["reasons"]}
    assert reasons == {"comment_required"}
    sent_back = http.post(f"/cases/{returned}/pledge/return", SUPERIOR,
                          json={"comment": "add a target on cohesion"})
    assert sent_back["to"]["status"] == "returned"
    assert "submit" in http.get(f"/cases/{returned}", f"{RETURNED}.clerk")["actions"]
    http.call("PUT", f"/cases/{returned}/pledge", f"{RETURNED}.clerk",
              json={"summary": f"{RETURNED} pledges for 2010 (revised)",
                    "items": items(RETURNED, extra=1)})
    http.post(f"/cases/{returned}/pledge/submit", f"{RETURNED}.secretary")

    for code, case_id in cases.items():
        approved = http.post(f"/cases/{case_id}/pledge/approve", SUPERIOR)
        assert approved["to"]["status"] == "approved", code
    assert len(http.get(f"/cases/{returned}/pledge", SUPERIOR)["items"]) == 3

    _ok(http.bulk("publish", ids), len(ids), "under_notice")
    board = http.get("/bulletin", None, params={"period": "2010"})
    assert sorted(p["case_id"] for p in board["pledges_under_notice"]) == ids
    early = http.bulk("close_notice", ids)
    assert early["refused"] == len(ids)
    assert {r["reasons"][0]["code"] for r in early["results"]} == {"notice_running"}
    http.clock.advance(days=7, hours=1)
    _ok(http.bulk("close_notice", ids), len(ids), "done")


def _review(http: Http, cases: dict[str, int], opens_on: date) -> None:
    """The office reviews; the secretaries acknowledge; the clerks keep the ledger."""
    http.clock.set(opens_on)
    ids = sorted(cases.values())
    _ok(http.bulk("open_review", ids), len(ids), "open")
    for code, case_id in cases.items():
        pledge = http.get(f"/cases/{case_id}/pledge", f"{code}.clerk")
        ratings = {item["criterion_code"]: "good" for item in _with_codes(http, pledge)}
        recorded = http.post(f"/cases/{case_id}/reviews", SUPERIOR, json={
            "achievements": "targets on schedule", "problems": "evidence is thin",
            "direction": "document the results", "ratings": ratings})
        assert (recorded["action"], recorded["to"]["status"]) == ("record_review", "recorded")
        acknowledged = http.post(f"/cases/{case_id}/reviews/acknowledge", f"{code}.secretary",
                                 json={"rectification_plan": "monthly evidence review"})
        assert acknowledged["to"]["status"] == "acknowledged"
        for n, item in enumerate(pledge["items"]):
            status = "not_kept" if code == NOT_KEPT and n == 0 else "kept"
            http.post(f"/cases/{case_id}/pledge/items/{item['id']}/fulfilment",
                      f"{code}.clerk", json={"status": status, "evidence": f"report {n + 1}"})
        ledger = http.get(f"/cases/{case_id}/pledge", f"{code}.secretary")["items"]
        assert all(len(item["ledger"]) == 1 for item in ledger)


def _with_codes(http: Http, pledge: dict[str, Any]) -> list[dict[str, Any]]:
    """The pledge's items with their criterion's code (the pledge gives the criterion id)."""
    codes = {c["id"]: c["code"] for s in http.get("/criteria-sets", None)
             for c in s["criteria"]}
    return [{**item, "criterion_code": codes[item["criterion_id"]]} for item in pledge["items"]]


def _evaluate(http: Http, cases: dict[str, int], opens_on: date) -> None:
    """Rounds open; accountless evaluators are swapped; everyone votes; results announced."""
    http.clock.set(opens_on)
    ids = sorted(cases.values())
    _ok(http.bulk("open_evaluation", ids), len(ids), "voting")
    usernames = {p["id"]: p["email"].removesuffix("@example.org")
                 for p in http.pages("/people", DECIDER)}
    person = {name: pid for pid, name in usernames.items()}
    accountless = {p.username for p in demo_people() if not p.has_account}
    for code, case_id in cases.items():
        assigned = http.get(f"/cases/{case_id}/round/evaluators", FLOW)
        absent = [e["person_id"] for e in assigned if usernames[e["person_id"]] in accountless]
        assert absent == [person[f"{code}.w2"]], code  # the worker without an account
        http.post(f"/cases/{case_id}/round/evaluators", DECIDER,
                  json={"remove": absent, "add": [person[f"{code}.b2.m2"]]})
        voters = sorted(usernames[e["person_id"]]
                        for e in http.get(f"/cases/{case_id}/round/evaluators", FLOW))
        assert f"{code}.w2" not in voters and f"{code}.b2.m2" in voters
        round_ = http.get(f"/cases/{case_id}/round", f"{code}.secretary")
        assert (round_["status"], round_["assigned"], round_["voted"]) == (
            "open", len(voters), 0)
        for n, voter in enumerate(voters):
            answer = "dissatisfied" if n < DISSATISFIED[code] else "satisfied"
            cast = http.post(f"/cases/{case_id}/round/ballot", voter,
                             json={"answers": {c["code"]: answer for c in round_["criteria"]}})
            assert cast["action"] == "cast_ballot"
        assert http.get(f"/cases/{case_id}/round", FLOW)["voted"] == len(voters)
    _ok(http.bulk("close_round", ids), len(ids), "tallied")
    _ok(http.bulk("announce_results", ids), len(ids), "announced")
    for code, case_id in cases.items():
        tally = http.get(f"/cases/{case_id}/round", f"{code}.secretary")["tally"]
        voters = 5 if code in ("post", "power-supply") else 4
        assert tally["overall_satisfaction"] == (voters - DISSATISFIED[code]) / voters, code


def _commend(http: Http, cases: dict[str, int], notice_days: int) -> int:
    """Select, post the shortlist, hand off, decide; returns the quota."""
    http.clock.advance(days=3)
    http.post("/periods/2010/commendations/select", f"{COMMITTEES[0]}.secretary", 403)
    [award] = http.post("/periods/2010/commendations/select", FLOW, 201)
    code_of = {case_id: code for code, case_id in cases.items()}
    nominations = {code_of[n["case_id"]]: n for n in award["nominations"]}
    assert (award["award"], award["pool_size"], sorted(nominations)) == (
        "advanced_organization", len(cases), sorted(cases))
    quota = award["quota"]
    shortlist = {code for code, n in nominations.items() if n["shortlisted"]}
    assert quota == 2 and len(shortlist) == award["shortlist_size"] == 3
    assert shortlist > COMMENDED and not shortlist & {NOT_KEPT, "industrial-assets", "telecom"}

    posted = http.post(f"/commendations/{award['id']}/notice", FLOW)
    assert (posted["status"], posted["cases"]) == ("under_notice", len(cases))
    [listed] = http.get("/bulletin", None, params={"period": "2010"})["shortlists_under_notice"]
    assert {code_of[c["case_id"]] for c in listed["candidates"]} == shortlist
    first = nominations[COMMITTEES[0]]["nomination_id"]
    assert "notice_running" in {r["code"] for r in http.post(
        f"/nominations/{first}/decide", DECIDER, 409, json={"commend": True})["reasons"]}

    http.clock.advance(days=notice_days, hours=1)
    [handed] = http.post("/periods/2010/commendations/hand-off", FLOW)
    assert (handed["result"], handed["cases"]) == ("handed_off", len(cases))
    commended = 0
    for code, nomination in sorted(nominations.items(), key=lambda kv: (
            kv[1]["rank"] is None, kv[1]["rank"] or 0, kv[0])):
        commend = nomination["shortlisted"] and commended < quota
        etag = http.call("GET", f"/cases/{cases[code]}", DECIDER).headers["ETag"]
        decided = http.post(f"/nominations/{nomination['nomination_id']}/decide", DECIDER,
                            json={"commend": commend, "comment": f"{code}: decided"},
                            headers={"If-Match": etag})
        assert decided["to"] == {"stage": "closed",
                                 "status": "commended" if commend else "not_commended"}
        commended += commend
    [final] = http.get("/periods/2010/commendations", AUDITOR)
    assert final["status"] == "decided"
    [board] = http.get("/bulletin", None, params={"period": "2010"})["commended"]
    assert {code_of[c["case_id"]] for c in board["commended"]} == COMMENDED
    return quota


def _roll_over(http: Http, cases: dict[str, int], quota: int) -> None:
    """Roll 2010 over after its end; check every 2010 case's final state and 2011-h1."""
    before = http.pages("/cases", AUDITOR, period="2010")
    http.clock.set(start_of_day(date(2011, 1, 1)) + timedelta(hours=1))
    report = http.post("/periods/2010/rollover", FLOW)
    assert report == {"closed_period": "2010", "lapsed": len(before) - len(cases),
                      "opened_period": "2011-h1", "cases_opened": report["cases_opened"]}
    assert report["cases_opened"] > len(cases)
    assert http.post("/periods/2010/rollover", FLOW) == {
        "closed_period": None, "lapsed": 0, "opened_period": None, "cases_opened": 0}

    final = http.pages("/cases", AUDITOR, period="2010")
    assert len(final) == len(before)
    committee_ids = set(cases.values())
    outcomes = Counter(c["status"] for c in final if c["id"] in committee_ids)
    assert {c["stage"] for c in final} == {"closed"}
    assert set(outcomes) <= {"commended", "not_commended"}
    assert outcomes["commended"] == len(COMMENDED) <= quota
    assert outcomes["commended"] + outcomes["not_commended"] == len(cases)
    assert {c["status"] for c in final if c["id"] not in committee_ids} == {"lapsed"}
    period = http.get("/periods/2010", None)
    assert period["status"] == "closed"

    following = http.pages("/cases", AUDITOR, period="2011-h1")
    assert len(following) == report["cases_opened"]
    assert {(c["stage"], c["status"]) for c in following} == {("pledge", "pending")}
    units = {c["organization_id"] for c in following if c["subject_kind"] == "organization"}
    committees = {c["organization_id"] for c in final if c["id"] in committee_ids}
    assert committees <= units
    assert http.get("/periods/2011-h1", None)["status"] == "open"
