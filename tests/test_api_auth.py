"""Sign-in over HTTP: passwords (Argon2id), the session cookie with CSRF, rate-limited failures,
bearer API tokens (stored hashed, revocable) and the flows' service token — on both databases.

The real app (``create_app``) runs on a private, committed copy of the seeded database (like
``fresh_db``, but one per module and backend) with a FixedClock the tests move forward; period
2010 is open, so every member has a case. Each test uses its own demo people.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models import Account, ApiToken, Case, Event, LoginFailure, WebSession
from service.api.app import create_app
from service.clock import FixedClock
from service.settings import Settings
from tests import apiclient as ac
from tests import builders as b
from tests.conftest import Database, private_database

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"
PROBLEM_JSON = "application/problem+json"
PROBLEM = "urn:pledgeflow:problem:"
EDIT = {"summary": "study and serve", "items": [
    {"criterion": "political_quality", "target": "read the notice", "measures": "weekly study",
     "deadline_on": "2010-11-01"},
    {"criterion": "job_skill", "target": "pass the exam", "measures": "evening classes",
     "deadline_on": "2010-11-01"}]}


@dataclass
class Api:
    db: Database
    clock: FixedClock
    client: TestClient

    def new_client(self) -> TestClient:
        """Another caller of the same app (its own cookie jar)."""
        return TestClient(self.client.app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def app_on_private_db(db: Database, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[Database, FixedClock, FastAPI]]:
    """One private database and app per module and backend (copying a database per test
    costs seconds on PostgreSQL); each test uses its own people and cases, so none sees
    another's rows. The clock only ever moves forward."""
    with private_database(db, tmp_path_factory.mktemp("api")) as private:
        clock = FixedClock()
        ac.open_2010(private, clock)
        app = create_app(Settings(database_url=private.url, dispatcher=False), clock=clock)
        yield private, clock, app
        app.state.engine.dispose()


@pytest.fixture
def api(app_on_private_db: tuple[Database, FixedClock, FastAPI]) -> Iterator[Api]:
    private, clock, app = app_on_private_db
    client = TestClient(app, raise_server_exceptions=False)  # no lifespan: no mail dispatcher
    yield Api(private, clock, client)
    client.close()


def assert_problem(response, status: int, slug: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def sign_in(client: TestClient, username: str, password: str = ac.DEMO_PASSWORD):  # type: ignore[no-untyped-def]
    return client.post(LOGIN, json={"username": username, "password": password})


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def member_case(api: Api, username: str, target: tuple[str, str] | None = None) -> int:
    """The member's case id, first walked (through the engine, committed) to ``target``."""
    with api.db.factory() as session, session.begin():
        case = b.member_case(session, username)
        if target is not None:
            b.drive(session, case, target, api.clock)
        return case.id


def case_row(api: Api, case_id: int) -> tuple[str, str, int, int]:
    """(stage, status, version, number of events) of a case, read fresh from the database."""
    with api.db.factory() as session:
        case = session.get(Case, case_id)
        events = session.scalar(sa.select(sa.func.count()).select_from(Event)
                                .where(Event.case_id == case_id))
        return case.stage, case.status, case.version, events


def account(api: Api, username: str) -> Account:
    with api.db.factory() as session:
        return session.scalars(sa.select(Account).where(Account.username == username)).one()


def sessions_of(api: Api, username: str) -> list[WebSession]:
    with api.db.factory() as session:
        return list(session.scalars(sa.select(WebSession).where(
            WebSession.account_id == account(api, username).id).order_by(WebSession.id)))


def tokens_of(api: Api, username: str) -> list[ApiToken]:
    with api.db.factory() as session:
        return list(session.scalars(sa.select(ApiToken).where(
            ApiToken.account_id == account(api, username).id).order_by(ApiToken.id)))


# --- passwords and the session cookie ----------------------------------------------------------


def test_login_sets_an_httponly_lax_session_cookie_and_returns_a_csrf_token(api):
    user = "telecom.b1.m1"
    response = sign_in(api.client, user)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["person_id"] == account(api, user).person_id
    assert len(body["csrf_token"]) >= 32
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 1
    name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
    name, _, token = name_value.partition("=")
    assert name == "pf_session" and len(token) >= 32
    attrs = {a.split("=")[0].lower(): a.partition("=")[2].lower() for a in attributes}
    assert "httponly" in attrs
    assert attrs.get("samesite") == "lax"
    assert token != body["csrf_token"]

    # The cookie is what signs the next request in.
    me = api.client.get(ME).json()
    assert (me["via"], me["person_id"]) == ("session", body["person_id"])

    # The session is stored by the cookie's hash, never the cookie itself ...
    [web_session] = sessions_of(api, user)
    assert web_session.token_hash == sha256(token)
    assert web_session.csrf_token == body["csrf_token"]
    # ... and the password by a memory-hard Argon2id hash.
    stored = account(api, user).password_hash
    assert stored.startswith("$argon2id$")
    assert ac.DEMO_PASSWORD not in stored
    memory_kib = int(re.search(r"\$m=(\d+),", stored).group(1))
    assert memory_kib >= 19 * 1024  # OWASP's floor for Argon2id


def test_a_wrong_password_is_a_401_problem_and_signs_nobody_in(api):
    user = "telecom.b1.m2"
    wrong = sign_in(api.client, user, "not-the-password")

    body = assert_problem(wrong, 401, "unauthenticated")
    assert "set-cookie" not in wrong.headers
    assert api.client.get(ME).json()["via"] == "anonymous"
    # An unknown username gets the same answer: sign-in does not reveal who has an account.
    unknown = sign_in(api.client, "nobody.at.all", "not-the-password")
    assert assert_problem(unknown, 401, "unauthenticated")["detail"] == body["detail"]

    assert sessions_of(api, user) == []
    with api.db.factory() as session:
        failed = session.scalars(sa.select(LoginFailure.username).where(
            LoginFailure.username.in_([user, "nobody.at.all"]))).all()
    assert sorted(failed) == ["nobody.at.all", user]


def test_the_sixth_failed_attempt_within_the_window_is_429_even_with_the_right_password(api):
    user = "telecom.b1.m3"
    for _ in range(5):
        assert sign_in(api.client, user, "guess-guess").status_code == 401

    refused = sign_in(api.client, user)

    assert_problem(refused, 429, "too-many-attempts")
    assert int(refused.headers["retry-after"]) > 0
    assert "set-cookie" not in refused.headers
    assert api.client.get(ME).json()["via"] == "anonymous"
    assert sessions_of(api, user) == []
    # The limit is per username: someone else signing in from the same address is not blocked.
    assert sign_in(api.new_client(), "telecom.b2.m1").status_code == 200
    # Once the failures are older than the window, the right password works again.
    api.clock.advance(minutes=16)
    assert sign_in(api.client, user).status_code == 200
    assert api.client.get(ME).json()["via"] == "session"


def test_unsafe_requests_with_the_session_cookie_need_the_csrf_token(api):
    user = "telecom.b2.m2"
    case_id = member_case(api, user, ("pledge", "drafting"))
    csrf = ac.login(api.client, user)
    attacker = api.new_client()
    foreign = ac.login(attacker, "telecom.b2.m3")["X-CSRF-Token"]  # valid, for another session
    before = case_row(api, case_id)

    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""},
                    {"X-CSRF-Token": foreign}):
        refused = api.client.put(f"/api/v1/cases/{case_id}/pledge", json=EDIT, headers=headers)
        assert_problem(refused, 403, "forbidden")
        no_token = api.client.post("/api/v1/tokens", json={"name": "x"}, headers=headers)
        assert_problem(no_token, 403, "forbidden")

    assert case_row(api, case_id) == before
    assert tokens_of(api, user) == []
    # Safe requests need no CSRF token.
    read = api.client.get(f"/api/v1/cases/{case_id}")
    assert read.status_code == 200 and read.json()["status"] == "drafting"
    # With the token, the same edit goes through.
    done = api.client.put(f"/api/v1/cases/{case_id}/pledge", json=EDIT, headers=csrf)
    assert done.status_code == 200, done.text
    assert case_row(api, case_id)[2] == before[2] + 1
    pledge = api.client.get(f"/api/v1/cases/{case_id}/pledge").json()
    assert [i["target"] for i in pledge["items"]] == ["read the notice", "pass the exam"]


def test_logout_ends_the_session_on_the_server_not_only_in_the_browser(api):
    user = "post.b1.m1"
    case_id = member_case(api, user)
    csrf = ac.login(api.client, user)
    cookie = api.client.cookies.get("pf_session")
    assert api.client.get(f"/api/v1/cases/{case_id}").status_code == 200

    # Logging out changes state too: without the CSRF token it is refused.
    assert_problem(api.client.post("/api/v1/auth/logout"), 403, "forbidden")
    assert api.client.get(ME).json()["via"] == "session"

    out = api.client.post("/api/v1/auth/logout", headers=csrf)
    assert out.status_code == 204
    assert "pf_session" in out.headers["set-cookie"]
    assert api.client.get(ME).json()["via"] == "anonymous"

    # Sending the old cookie again does not bring the session back.
    api.client.cookies.set("pf_session", cookie)
    assert api.client.get(ME).json() == {"person_id": None, "name": None, "flow": None,
                                         "via": "anonymous"}
    assert_problem(api.client.get(f"/api/v1/cases/{case_id}"), 404, "not-found")
    assert_problem(api.client.post("/api/v1/tokens", json={"name": "x"}, headers=csrf),
                   401, "unauthenticated")
    assert [s.revoked_at is not None for s in sessions_of(api, user)] == [True]


# --- bearer tokens -----------------------------------------------------------------------------


def test_api_tokens_are_shown_once_stored_hashed_listed_and_revocable(api):
    user, other_user = "post.b1.m2", "post.b1.m3"
    csrf = ac.login(api.client, user)
    created = api.client.post("/api/v1/tokens", json={"name": "nightly script"}, headers=csrf)
    assert created.status_code == 201, created.text
    token, token_id = created.json()["token"], created.json()["id"]
    assert len(token) >= 40  # 256 random bits

    assert [t.token_hash for t in tokens_of(api, user)] == [sha256(token)]
    with api.db.factory() as session:
        everything = repr(session.execute(sa.select(ApiToken.__table__)).all())
    assert token not in everything  # the secret itself is stored nowhere

    listed = api.client.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert [(t["id"], t["name"], t["revoked_at"]) for t in listed.json()] == [
        (token_id, "nightly script", None)]
    assert token not in listed.text  # shown once, at creation only

    script = api.new_client()  # no cookie: the token alone signs it in
    bearer = {"Authorization": f"Bearer {token}"}
    me = script.get(ME, headers=bearer).json()
    assert (me["person_id"], me["via"]) == (account(api, user).person_id, "token")
    # Bearer requests carry no cookie, so they need no CSRF token.
    assert script.post("/api/v1/tokens", json={"name": "second"}, headers=bearer
                       ).status_code == 201

    # Somebody else cannot revoke it (nor learn that it exists).
    other = api.new_client()
    assert_problem(other.delete(f"/api/v1/tokens/{token_id}",
                                headers=ac.bearer(api.db, other_user)), 404, "not-found")
    assert script.get(ME, headers=bearer).json()["via"] == "token"

    assert api.client.delete(f"/api/v1/tokens/{token_id}", headers=csrf).status_code == 204

    assert_problem(script.get(ME, headers=bearer), 401, "unauthenticated")
    case_id = member_case(api, user)
    assert_problem(script.get(f"/api/v1/cases/{case_id}", headers=bearer), 401,
                   "unauthenticated")
    revoked = {t["id"]: t["revoked_at"] for t in api.client.get("/api/v1/tokens").json()}
    assert revoked[token_id] is not None
    assert len(revoked) == 2  # the second token lives on


def test_a_deactivated_accounts_token_no_longer_signs_anyone_in(api):
    user = "post.b1.m3"
    bearer = ac.bearer(api.db, user)
    client = api.new_client()
    assert client.get(ME, headers=bearer).json()["via"] == "token"
    with api.db.factory() as session, session.begin():
        session.get_one(Account, account(api, user).id).active = False
    try:
        assert_problem(client.get(ME, headers=bearer), 401, "unauthenticated")
    finally:
        with api.db.factory() as session, session.begin():
            session.get_one(Account, account(api, user).id).active = True
    assert client.get(ME, headers=bearer).json()["via"] == "token"


def test_a_malformed_or_unknown_authorization_header_is_401_never_anonymous(api):
    for value in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc", "Bearerabc",
                  "Bearer not-a-token-we-issued"):
        response = api.client.get(ME, headers={"Authorization": value})
        assert_problem(response, 401, "unauthenticated")

    # Nor does a bad header fall back to the session cookie sent along with it.
    ac.login(api.client, "post.b2.m1")
    assert_problem(api.client.get(ME, headers={"Authorization": "Basic dXNlcjpwYXNz"}),
                   401, "unauthenticated")
    assert api.client.get(ME).json()["via"] == "session"


# --- the flows' service token ------------------------------------------------------------------


def test_a_flow_service_token_acts_as_the_flow_and_the_history_says_so(api):
    case_id = member_case(api, "post.b2.m2", ("pledge", "approved"))
    flow = ac.bearer(api.db, flow="drive_period")
    assert api.client.get(ME, headers=flow).json() == {
        "person_id": None, "name": None, "flow": "drive_period", "via": "token"}

    published = api.client.post(f"/api/v1/cases/{case_id}/pledge/publish", headers=flow)

    assert published.status_code == 200, published.text
    assert published.json()["to"] == {"stage": "pledge", "status": "under_notice"}
    with api.db.factory() as session:
        event = session.get(Event, published.json()["event_seq"])
        assert (event.case_id, event.action) == (case_id, "publish")
        assert event.actor_flow == "drive_period"
        assert event.actor_person_id is None
    timeline = api.client.get(f"/api/v1/cases/{case_id}/events", headers=flow).json()["items"]
    assert (timeline[-1]["actor_flow"], timeline[-1]["actor_person_id"]) == ("drive_period", None)
    # A service token is not a person: it cannot mint personal tokens.
    assert_problem(api.client.post("/api/v1/tokens", json={"name": "x"}, headers=flow),
                   403, "forbidden")


def test_a_person_token_cannot_take_an_action_reserved_for_the_flows(api):
    # (The API has no route for open_pledge; close_notice is the flows' own pledge action.)
    user = "post.b2.m3"
    case_id = member_case(api, user, ("pledge", "under_notice"))
    api.clock.advance(days=30)  # the window is over: only the role stands in the way
    before = case_row(api, case_id)

    refused = api.client.post(f"/api/v1/cases/{case_id}/pledge/close_notice",
                              headers=ac.bearer(api.db, user))

    body = assert_problem(refused, 409, "transition-refused")
    assert [r["code"] for r in body["reasons"]] == ["role"]
    assert case_row(api, case_id) == before
    # The same request from the flow goes through.
    closed = api.client.post(f"/api/v1/cases/{case_id}/pledge/close_notice",
                             headers=ac.bearer(api.db, flow="close_notices"))
    assert closed.status_code == 200, closed.text
    assert case_row(api, case_id)[:2] == ("pledge", "done")
