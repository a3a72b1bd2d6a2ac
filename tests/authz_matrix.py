"""The world the HTTP authorization matrix runs in (``test_api_authorization_matrix.py``):
who the callers are, which case of unit "A" each row acts on, the rows of the matrix with
what each caller must get, and the module-scoped ``world`` fixture (cases in every state,
tokens, a snapshot of what a refusal must leave unchanged)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from models import (
    ApiToken,
    BallotReceipt,
    Case,
    ChainHead,
    Commendation,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    FulfilmentEntry,
    IdempotencyRecord,
    Nomination,
    Notification,
    Objection,
    Pledge,
    PledgeItem,
    PublicNotice,
    Review,
)
from service import accounts
from service.clock import FixedClock
from service.workflow.roles import Actor
from tests import apiclient as ac
from tests import builders as b
from tests import test_api_auth
from tests.conftest import Database

# One private, committed database and app per module and backend (period 2010 open).
app_on_private_db = test_api_auth.app_on_private_db

API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
PROBLEM = "urn:pledgeflow:problem:"
FLOW = "authz-matrix"  # the flow service token's name
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch"})

# --- who ------------------------------------------------------------------------------------

B = "telecom.b1"  # the unrelated unit: a branch of another enterprise (same level as A)
# An evaluator with a ballot open elsewhere: assigned to the voting twin's round (power-supply),
# an enterprise none of the matrix's cases of A belongs to.
ELSEWHERE = "power-supply.w1"


def username(actor: str, unit: str) -> str | None:
    """The demo account playing ``actor`` for a case of ``unit`` (None: anonymous, FLOW)."""
    enterprise, _, branch = unit.partition(".")
    sibling = f"{enterprise}.{'b2' if branch == 'b1' else 'b1'}"
    return {
        "anonymous": None,
        "member_of_B": f"{B}.m2",
        "secretary_of_B": f"{B}.secretary",
        "secretary_of_sibling": f"{sibling}.secretary",  # same enterprise, same level
        "member_of_A": f"{unit}.m2",  # a Party member of A: not unit staff
        "secretary_of_A": f"{unit}.secretary",  # unit staff: the subject of A's case
        "superior_of_A": f"{enterprise}.secretary",  # the Party committee above A
        "evaluator_elsewhere": ELSEWHERE,  # assigned to a round, not to A's
        "evaluator_of_A": f"{enterprise}.w1",  # assigned to A's round once it opens
        "flow": FLOW,
        "office": "office.admin",
        "auditor": "auditor",
    }[actor]


# What each caller is to the case, written out (this is the spec, not derived from the code):
# a role the transition table knows, or a tag the policies below read.
ACTORS: dict[str, frozenset[str]] = {
    "anonymous": frozenset(),
    "member_of_B": frozenset({"person"}),
    "secretary_of_B": frozenset({"person"}),
    "secretary_of_sibling": frozenset({"person", "same_enterprise"}),
    "member_of_A": frozenset({"person", "same_enterprise"}),
    "secretary_of_A": frozenset({"person", "same_enterprise", "subject", "token_owner"}),
    "superior_of_A": frozenset({"person", "same_enterprise", "superior"}),
    "evaluator_elsewhere": frozenset({"person"}),
    "evaluator_of_A": frozenset({"person", "same_enterprise"}),  # + evaluator, see relation()
    "flow": frozenset({"flow", "operator", "sees_all"}),
    "office": frozenset({"person", "office", "operator", "sees_all"}),
    "auditor": frozenset({"person", "auditor", "sees_all"}),
}
READERS = frozenset({"subject", "superior", "evaluator", "sees_all"})
WITH_ROUND = frozenset({"voting", "tallied", "shortlist"})


def relation(actor: str, case: str) -> frozenset[str]:
    """The actor's tags for A's case in this state (the evaluator role needs a round)."""
    return ACTORS[actor] | ({"evaluator"} if actor == "evaluator_of_A" and case in WITH_ROUND
                            else frozenset())


# --- which case of A ------------------------------------------------------------------------

# State key -> (A's branch for the matrix, the state it is driven to). Twins stand in the same
# state for the allowed pairs that are carried out (so the matrix's cases never change).
CASES: dict[str, tuple[str, tuple[str, str]]] = {
    "drafting": ("supply-marketing.b1", ("pledge", "drafting")),
    "submitted": ("supply-marketing.b2", ("pledge", "submitted")),
    "approved": ("commercial-assets.b1", ("pledge", "approved")),
    "pledge_notice": ("commercial-assets.b2", ("pledge", "under_notice")),
    "review_open": ("urban-investment.b1", ("review", "open")),
    "review_recorded": ("urban-investment.b2", ("review", "recorded")),
    "voting": ("industrial-assets.b1", ("evaluation", "voting")),
    "tallied": ("industrial-assets.b2", ("evaluation", "tallied")),
    "shortlist": ("dongfang-assets.b1", ("commendation", "under_notice")),
}
TWINS: dict[str, str] = {"drafting": "post.b2", "submitted": "post.b1",
                         "voting": "power-supply.b1", "pledge_notice": "power-supply.b2",
                         "shortlist": "dongfang-assets.b2"}


@dataclass
class Ref:
    """Ids of one case of A and of what hangs off it (paths and bodies are filled from it)."""

    unit: str
    case_id: int
    organization_id: int
    person_id: int  # A's secretary
    token_id: int  # an API token of A's secretary
    item_id: int | None = None
    objection_id: int | None = None
    nomination_id: int | None = None
    commendation_id: int | None = None
    criteria: list[str] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return {"code": "2010", **{k: v for k, v in vars(self).items() if k != "criteria"}}


# --- the matrix -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One operation tried by every actor on one case of A.

    ``policy``: ``action`` (a workflow action through the choke point: 404 unreadable, 409 for
    a role not in ``allowed``), ``read`` (404 unreadable; 403 outside ``allowed`` if given),
    ``operator`` (401 anonymous, 403 non-operators), ``signed_in`` (401 anonymous; 404 outside
    ``allowed`` if given), ``person`` (like ``signed_in``, and 403 for a flow), ``listing``
    (a filtered list: does it contain the object?). Allowed actions are not sent (they would
    write) unless ``send_allowed`` names the status they answer with."""

    op: str
    case: str
    policy: str
    allowed: frozenset[str] = frozenset()
    action: str | None = None
    body: Callable[[Ref], Any] | None = None
    refusal: str = "role"
    gate: str = "none"  # listings: "none", "signed_in" or "person"
    send_allowed: str | None = None


def _roles(*names: str) -> frozenset[str]:
    return frozenset(names)


def ballot(ref: Ref) -> dict[str, Any]:
    return {"answers": dict.fromkeys(ref.criteria, "satisfied")}


MACHINE = _roles("flow", "office")
OPERATOR = "operator"
COMMENT = {"comment": "targets are not measurable"}


def _action(path: str, case: str, allowed: frozenset[str], action: str, method: str = "POST",
            body: Any = None) -> Row:
    return Row(f"{method} {API}/cases/{{case_id}}{path}", case, "action", allowed, action,
               body if callable(body) or body is None else (lambda _ref, body=body: body))


def _operator(method: str, path: str, send_allowed: str | None = None, body: Any = None) -> Row:
    return Row(f"{method} {API}{path}", "shortlist", OPERATOR, _roles("operator"),
               body=body,
               send_allowed=send_allowed or ("200" if method == "GET" else None))


ROWS: tuple[Row, ...] = (
    # Reads of a case.
    Row(f"GET {API}/cases/{{case_id}}", "voting", "read"),
    Row(f"GET {API}/cases/{{case_id}}/events", "voting", "read"),
    Row(f"GET {API}/cases/{{case_id}}/pledge", "approved", "read"),
    Row(f"GET {API}/cases/{{case_id}}/reviews", "review_recorded", "read"),
    Row(f"GET {API}/cases/{{case_id}}/round", "voting", "read"),
    Row(f"GET {API}/cases/{{case_id}}/round/evaluators", "voting", "read",
        _roles("office", "flow", "superior")),
    Row(f"GET {API}/cases/{{case_id}}/objections", "pledge_notice", "read"),
    # Public pledge.
    _action("/pledge", "drafting", _roles("subject"), "edit_pledge", "PUT",
            lambda ref: {"summary": "s", "items": [{"target": "t", "measures": "m"}]}),
    _action("/pledge/submit", "drafting", _roles("subject"), "submit"),
    _action("/pledge/withdraw", "submitted", _roles("subject"), "withdraw"),
    _action("/pledge/approve", "submitted", _roles("superior"), "approve"),
    _action("/pledge/return", "submitted", _roles("superior"), "return", body=COMMENT),
    _action("/pledge/publish", "approved", _roles("flow", "office", "subject"), "publish"),
    _action("/pledge/close_notice", "pledge_notice", MACHINE, "close_notice"),
    _action("/pledge/items/{item_id}/fulfilment", "approved", _roles("subject"),
            "record_fulfilment", body={"status": "kept", "evidence": "minutes"}),
    # Nothing of A's drafting case is under notice: unreadable callers learn nothing (404).
    Row(f"POST {API}/cases/{{case_id}}/objections", "drafting", "action",
        body=lambda ref: {"body": "copied"}, refusal="not_allowed_in_state"),
    Row(f"POST {API}/objections/{{objection_id}}/uphold", "pledge_notice", "action",
        _roles("office", "superior"), "uphold_objection", lambda ref: COMMENT),
    Row(f"POST {API}/objections/{{objection_id}}/dismiss", "pledge_notice", "action",
        _roles("office", "superior"), "dismiss_objection", lambda ref: COMMENT),
    # Leader review: the scheduled one, then an ad hoc one (same operation, later state).
    _action("/reviews", "review_open", _roles("superior"), "record_review",
            body={"achievements": "a", "problems": "p", "direction": "d"}),
    _action("/reviews", "tallied", _roles("superior"), "record_ad_hoc_review",
            body={"achievements": "a", "problems": "p", "direction": "d"}),
    _action("/reviews/acknowledge", "review_recorded", _roles("subject"), "acknowledge_review",
            body={"rectification_plan": "plan"}),
    # Mass evaluation.
    _action("/round/open", "review_recorded", MACHINE, "open_evaluation"),
    _action("/round/evaluators", "voting", _roles("office"), "assign_evaluators",
            body=lambda ref: {"add": [ref.person_id]}),
    _action("/round/ballot", "voting", _roles("evaluator"), "cast_ballot", body=ballot),
    _action("/round/extend", "voting", MACHINE, "extend_round"),
    _action("/round/close", "voting", MACHINE, "close_round"),
    _action("/round/inconclusive", "voting", MACHINE, "mark_inconclusive"),
    _action("/round/announce", "tallied", MACHINE, "announce_results"),
    # Selection and commendation: the office decides; nobody from A does.
    Row(f"POST {API}/nominations/{{nomination_id}}/adjust", "shortlist", "action",
        _roles("office"), "adjust_nomination",
        lambda ref: {"shortlisted": False, "rationale": "not this year"}),
    Row(f"POST {API}/nominations/{{nomination_id}}/decide", "shortlist", "action",
        _roles("office"), "decide", lambda ref: {"commend": True}),
    Row(f"GET {API}/periods/{{code}}/commendations", "shortlist", "signed_in"),
    # Campaign-wide operations: flows and office admins only, whatever the relation to A.
    _operator("POST", "/periods/{code}/commendations/select", send_allowed="200"),
    _operator("POST", "/commendations/{commendation_id}/notice",
              send_allowed="409 transition-refused already_posted"),
    _operator("POST", "/bulk/actions",
              body=lambda ref: {"action": "close_notice", "case_ids": [ref.case_id]}),
    _operator("POST", "/periods/{code}/open"),
    _operator("POST", "/periods/{code}/rollover",
              send_allowed="409 transition-refused period_not_ended"),
    _operator("GET", "/periods/{code}/case-states"),
    _operator("GET", "/cases/{case_id}/state"),
    _operator("GET", "/periods/{code}/awards"),
    _operator("POST", "/periods/{code}/commendations/hand-off"),
    _operator("POST", "/reminders/run"),
    _operator("POST", "/notifications/sweep"),
    # The directory and one's own tokens.
    Row(f"GET {API}/people/{{person_id}}", "drafting", "signed_in",
        _roles("same_enterprise", "sees_all")),
    Row(f"DELETE {API}/tokens/{{token_id}}", "drafting", "person", _roles("token_owner")),
    # Filtered lists: A's case (or secretary) is listed exactly for those who may read it.
    Row(f"GET {API}/cases", "voting", "listing", READERS),
    Row(f"GET {API}/cases", "drafting", "listing", READERS),
    Row(f"GET {API}/people", "drafting", "listing", _roles("same_enterprise", "sees_all"),
        gate="signed_in"),
    Row(f"GET {API}/inbox", "submitted", "listing", _roles("superior"), gate="person"),
)

# Operations outside the matrix, each with why. Nothing here takes the id of a case, a person
# or anyone else's object.
EXEMPT: dict[str, str] = {
    f"POST {API}/auth/login": "public by nature: how a caller becomes someone (test_api_auth)",
    f"POST {API}/auth/logout": "ends the caller's own session only (test_api_auth)",
    f"GET {API}/auth/me": "says who the caller is, nothing else",
    f"GET {API}/tokens": "lists the caller's own tokens only (test_api_auth)",
    f"POST {API}/tokens": "creates a token for the caller's own account (test_api_auth)",
    f"GET {API}/organizations": "public reference data (the bulletin board shows it)",
    f"GET {API}/organizations/{{organization_id}}": "public reference data",
    f"GET {API}/periods": "public reference data",
    f"GET {API}/periods/{{code}}": "public reference data",
    f"GET {API}/criteria-sets": "public reference data",
    f"GET {API}/bulletin": "the public bulletin board: no sign-in, nothing private by design",
}

ALLOWED = "allowed"


def expected(row: Row, tags: frozenset[str]) -> str:
    """What the policy says this caller gets (see the module docstring)."""
    signed_in = bool(tags)
    if row.policy == "action":
        if not tags & READERS:
            return "404 not-found"
        return ALLOWED if tags & row.allowed else f"409 transition-refused {row.refusal}"
    if row.policy == "read":
        if not tags & READERS:
            return "404 not-found"
        return ALLOWED if not row.allowed or tags & row.allowed else "403 forbidden"
    if row.policy == "operator":
        if not signed_in:
            return "401 unauthenticated"
        return _allowed(row) if "operator" in tags else "403 forbidden"
    if row.policy in ("signed_in", "person"):
        if not signed_in:
            return "401 unauthenticated"
        if row.policy == "person" and "person" not in tags:
            return "403 forbidden"
        return ALLOWED if not row.allowed or tags & row.allowed else "404 not-found"
    assert row.policy == "listing", row
    if row.gate != "none" and not signed_in:
        return "401 unauthenticated"
    if row.gate == "person" and "person" not in tags:
        return "403 forbidden"
    return "lists" if tags & row.allowed else "hides"


def _allowed(row: Row) -> str:
    return ALLOWED if row.send_allowed in (None, "200") else row.send_allowed


def describe(response: Response) -> str:
    """A response as the matrix writes it: "allowed", or status, problem type and reasons."""
    status = response.status_code
    if status < 300:
        return ALLOWED
    if response.headers.get("content-type") != PROBLEM_JSON:
        return f"{status} not problem+json: {response.text[:80]}"
    body = response.json()
    kind = str(body.get("type", ""))
    if not kind.startswith(PROBLEM) or body.get("status") != status or not body.get("title"):
        return f"{status} malformed problem {body}"
    out = f"{status} {kind.removeprefix(PROBLEM)}"
    if status == 409 and body.get("reasons"):
        out += " " + ",".join(r["code"] for r in body["reasons"])
    return out


# --- the world the matrix runs in -------------------------------------------------------------

@dataclass
class World:
    db: Database
    clock: FixedClock
    client: TestClient
    refs: dict[str, Ref]  # the matrix's cases of A, by state key
    twins: dict[str, Ref]
    b: Ref  # unit B's case (pledge approved: it has items)
    spare: Ref  # another branch's drafting case
    _auth: dict[str | None, dict[str, str]] = field(default_factory=dict)
    _actions: dict[tuple[str | None, int], list[str]] = field(default_factory=dict)

    def auth(self, who: str | None) -> dict[str, str]:
        """A bearer header for a username (or the flow); none for anonymous."""
        if who is None:
            return {}
        if who not in self._auth:
            self._auth[who] = (ac.bearer(self.db, flow=FLOW) if who == FLOW
                               else ac.bearer(self.db, who))
        return self._auth[who]

    def send(self, method: str, path: str, who: str | None, *, json: Any = None,
             params: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Response:
        return self.client.request(method, path, json=json, params=params,
                                   headers={**self.auth(who), **(headers or {})})

    def offered(self, who: str | None, case_id: int) -> list[str]:
        """The actions GET /cases/{id} offers this caller (cached: the matrix writes nothing)."""
        key = (who, case_id)
        if key not in self._actions:
            response = self.send("GET", f"{API}/cases/{case_id}", who)
            assert response.status_code == 200, response.text
            self._actions[key] = response.json()["actions"]
        return self._actions[key]

    def snapshot(self, case_id: int) -> dict[str, Any]:
        """Everything a refused request could have written, in one query."""
        with self.db.engine.connect() as conn:
            row = conn.execute(SNAPSHOT, {"case_id": case_id}).one()
        return dict(zip(SNAPSHOT_COLUMNS, row, strict=True))


def _count(model: Any, where: str = "") -> str:
    return f'(SELECT count(*) FROM "{model.__tablename__}"{" WHERE " + where if where else ""})'


# Counts of every table a request could write to, the chain head and the case's state; plain
# SQL written once (building it with the ORM per request doubled the matrix's time).
SNAPSHOT_COLUMNS: dict[str, str] = {
    "chain_head": f'(SELECT seq FROM "{ChainHead.__tablename__}")',
    "events": _count(Event), "notifications": _count(Notification),
    "objections": _count(Objection), "open_objections": _count(Objection, "status = 'open'"),
    "notices": _count(PublicNotice), "pledge_items": _count(PledgeItem),
    "ledger": _count(FulfilmentEntry), "reviews": _count(Review),
    "assignments": _count(EvaluatorAssignment), "ballots": _count(BallotReceipt),
    "shortlisted": _count(Nomination, "shortlisted"),
    "commendations_moved": _count(Commendation, "status <> 'selected'"),
    "revoked_tokens": _count(ApiToken, "revoked_at IS NOT NULL"),
    "idempotency": _count(IdempotencyRecord),
    "case": f"(SELECT stage || '/' || status || '/v' || CAST(version AS VARCHAR(12)) "
            f'FROM "{Case.__tablename__}" WHERE id = :case_id)',
}
SNAPSHOT = sa.text("SELECT " + ", ".join(SNAPSHOT_COLUMNS.values()))


def _ids(session: Any, unit: str, case: Case) -> Ref:
    """The ids the matrix's paths and bodies need, for one case (an API token included)."""
    secretary = b.person(session, f"{unit}.secretary")
    account_id = session.scalar(sa.text("select id from account where person_id = :p"),
                                {"p": secretary.id})
    _, token = accounts.create_token(session, name="matrix", now=FixedClock().now(),
                                     account_id=account_id)
    ref = Ref(unit=unit, case_id=case.id, organization_id=case.organization_id,
              person_id=secretary.id, token_id=token.id)
    pledge_id = session.scalar(sa.select(Pledge.id).where(Pledge.case_id == case.id))
    ref.item_id = session.scalar(sa.select(PledgeItem.id).where(PledgeItem.pledge_id == pledge_id)
                                 .order_by(PledgeItem.position).limit(1))
    ref.objection_id = session.scalar(sa.select(Objection.id).where(
        Objection.case_id == case.id, Objection.status == "open"))
    nomination = session.execute(sa.select(Nomination.id, Nomination.commendation_id).where(
        Nomination.case_id == case.id)).first()
    if nomination is not None:
        ref.nomination_id, ref.commendation_id = nomination
    ref.criteria = list(session.scalar(sa.select(EvaluationRound.criteria).where(
        EvaluationRound.case_id == case.id)) or [])
    return ref


# The build walks every case up to each milestone in turn, so the one clock only moves forward
# and every case crosses each date together: pledge notices all run in June, every round opens
# on the evaluation date (and stays open), the selection sees both commendation cases at once.
MILESTONES = (("pledge", "approved"), ("pledge", "done"), ("review", "acknowledged"),
              ("evaluation", "announced"), ("commendation", "under_notice"))
SPARE = "post.g1.b1"  # a drafting case for the one test that edits A's pledge for real


def _build(session: Any, clock: FixedClock) -> tuple[dict[str, Ref], dict[str, Ref], Ref,
                                                       Ref]:
    """Every case the matrix needs; at the end the clock stands where a pledge notice is open,
    the shortlist notice has ended and ballots are still accepted."""
    plan = [(("refs", key), unit, state) for key, (unit, state) in CASES.items()]
    plan += [(("twins", key), unit, CASES[key][1]) for key, unit in TWINS.items()]
    plan += [(("b", ""), B, ("pledge", "approved")), (("spare", ""), SPARE, ("pledge", "drafting"))]
    order = b.HAPPY_PATH.index
    cases = {where: b.unit_case(session, unit) for where, unit, _ in plan}
    for milestone in MILESTONES:
        for where, _, state in plan:
            if state[1] == "under_notice" and state[0] == "pledge":
                state = ("pledge", "approved")  # posted last, so the notice is open at the end
            b.drive(session, cases[where], min(state, milestone, key=order), clock)
    clock.advance(days=8)  # the shortlist notice has run its course; ballots still open
    for where, _, state in plan:
        case = cases[where]
        if state == ("pledge", "drafting"):
            b.act(session, case, "edit_pledge", b.subject_of(session, case), clock,
                  data={"items": b.items_for(case)})
        elif state == ("pledge", "under_notice"):
            b.drive(session, case, state, clock)
            b.act(session, case, "file_objection", Actor.public(), clock,
                  data={"body": "the targets were copied from last year"})
    refs: dict[str, dict[str, Ref]] = {"refs": {}, "twins": {}, "b": {}, "spare": {}}
    for (group, key), unit, _ in plan:
        refs[group][key] = _ids(session, unit, cases[(group, key)])
    return refs["refs"], refs["twins"], refs["b"][""], refs["spare"][""]


def _tokens(session: Any, refs: dict[str, Ref]) -> dict[str | None, dict[str, str]]:
    """A bearer header for every account the matrix signs in as (one transaction, not one per
    caller), and for the flow."""
    now = FixedClock().now()
    names = {username(actor, ref.unit) for ref in refs.values() for actor in ACTORS}
    out: dict[str | None, dict[str, str]] = {None: {}}
    for name in sorted(names - {None}, key=str):
        account_id = None if name == FLOW else session.scalar(
            sa.text("select id from account where username = :u"), {"u": name})
        token, _ = accounts.create_token(session, name="matrix", now=now, account_id=account_id,
                                         flow_name=FLOW if name == FLOW else None)
        out[name] = {"Authorization": f"Bearer {token}"}
    return out


@pytest.fixture(scope="module")
def world(app_on_private_db: tuple[Database, FixedClock, FastAPI]) -> Iterator[World]:
    private, clock, app = app_on_private_db
    with private.factory() as session, session.begin():
        refs, twins, unit_b, spare = _build(session, clock)
        tokens = _tokens(session, {**refs, **{f"twin {k}": v for k, v in twins.items()}})
    # One event loop for the module's requests (entered: not a new portal thread per request).
    # The lifespan runs no dispatcher (dispatcher=False); on exit it disposes the app's engine.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(private, clock, client, refs, twins, unit_b, spare, _auth=tokens)


