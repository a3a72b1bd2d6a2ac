"""Optimistic concurrency and safe retries over HTTP: the case version as ETag / If-Match, and
Idempotency-Key on POST actions — on both databases.

The real app (``create_app``) runs on a private, committed copy of the seeded database (like
``fresh_db``, but one per module and backend) with a FixedClock the tests move forward; period
2010 is open. Each test works on its own members' cases, acting with bearer tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models import Account, Case, Event, IdempotencyRecord, Notification
from service.api import idempotency
from service.api.app import create_app
from service.clock import FixedClock
from service.settings import Settings
from tests import apiclient as ac
from tests import builders as b
from tests.conftest import Database, private_database

PROBLEM_JSON = "application/problem+json"
PROBLEM = "urn:pledgeflow:problem:"


@dataclass
class Api:
    db: Database
    clock: FixedClock
    client: TestClient


@pytest.fixture(scope="module")
def app_on_private_db(db: Database, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[Database, FixedClock, FastAPI]]:
    """One private database and app per module and backend; tests never share a case."""
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


def drafting(api: Api, username: str, *, with_items: bool = True) -> int:
    """The member's case in pledge/drafting (with two complete items unless told otherwise)."""
    with api.db.factory() as session, session.begin():
        case = b.member_case(session, username)
        b.drive(session, case, ("pledge", "drafting"), api.clock)
        if with_items:
            b.act(session, case, "edit_pledge", b.subject_of(session, case), api.clock,
                  data={"summary": "s", "items": b.items_for(case)})
        return case.id


def snapshot(api: Api, case_id: int) -> tuple[str, str, int, int, int]:
    """(stage, status, version, events, notifications) of a case, read fresh."""
    with api.db.factory() as session:
        case = session.get(Case, case_id)

        def count(model, column) -> int:  # type: ignore[no-untyped-def]
            return session.scalar(sa.select(sa.func.count()).select_from(model)
                                  .where(column == case_id))

        return (case.stage, case.status, case.version, count(Event, Event.case_id),
                count(Notification, Notification.case_id))


def submit(api: Api, case_id: int, headers: dict, **kwargs):  # type: ignore[no-untyped-def]
    return api.client.post(f"/api/v1/cases/{case_id}/pledge/submit", headers=headers, **kwargs)


# --- ETag and If-Match -------------------------------------------------------------------------


def test_a_case_and_its_pledge_carry_the_case_version_as_etag(api):
    user = "urban-investment.b1.m1"
    case_id = drafting(api, user)
    me = ac.bearer(api.db, user)
    version = snapshot(api, case_id)[2]

    case = api.client.get(f"/api/v1/cases/{case_id}", headers=me)
    assert case.status_code == 200
    assert case.headers["etag"] == f'"v{version}"'
    assert case.json()["version"] == version
    assert api.client.get(f"/api/v1/cases/{case_id}/pledge",
                          headers=me).headers["etag"] == f'"v{version}"'

    submitted = submit(api, case_id, me)

    assert submitted.status_code == 200, submitted.text
    assert submitted.headers["etag"] == f'"v{version + 1}"'
    assert submitted.json()["version"] == version + 1
    assert api.client.get(f"/api/v1/cases/{case_id}",
                          headers=me).headers["etag"] == f'"v{version + 1}"'


def test_an_action_on_a_stale_version_is_refused_with_412_and_writes_nothing(api):
    user = "urban-investment.b1.m2"
    case_id = drafting(api, user)
    me = ac.bearer(api.db, user)
    seen = api.client.get(f"/api/v1/cases/{case_id}", headers=me).headers["etag"]
    # Meanwhile the pledge is edited (say, in another tab): the version moves on.
    edited = api.client.put(f"/api/v1/cases/{case_id}/pledge", headers=me, json={
        "summary": "revised", "items": [{"criterion": "job_skill", "target": "t",
                                         "measures": "m", "deadline_on": "2010-11-01"}]})
    assert edited.status_code == 200, edited.text
    before = snapshot(api, case_id)

    stale = submit(api, case_id, {**me, "If-Match": seen})

    body = assert_problem(stale, 412, "stale-version")
    assert body["current_version"] == before[2]
    assert snapshot(api, case_id) == before
    current = api.client.get(f"/api/v1/cases/{case_id}", headers=me).headers["etag"]
    assert current == edited.headers["etag"] != seen

    fresh = submit(api, case_id, {**me, "If-Match": current})

    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["etag"] == f'"v{before[2] + 1}"'
    assert snapshot(api, case_id)[:3] == ("pledge", "submitted", before[2] + 1)
    assert api.client.get(f"/api/v1/cases/{case_id}",
                          headers=me).headers["etag"] == fresh.headers["etag"]


def test_a_malformed_if_match_is_422_and_writes_nothing(api):
    user = "urban-investment.b1.m3"
    case_id = drafting(api, user)
    me = ac.bearer(api.db, user)
    before = snapshot(api, case_id)

    for value in ("v2", '"two"', "garbage", '""', '"v"'):
        refused = submit(api, case_id, {**me, "If-Match": value})
        body = assert_problem(refused, 422, "invalid-input")
        assert [r["code"] for r in body["reasons"]] == ["bad_if_match"]

    assert snapshot(api, case_id) == before
    # "*" means "whatever the current version is".
    assert submit(api, case_id, {**me, "If-Match": "*"}).status_code == 200


# --- Idempotency-Key ---------------------------------------------------------------------------


def test_a_replay_with_the_same_key_returns_the_first_response_and_acts_once(api):
    user = "urban-investment.b2.m1"
    case_id = drafting(api, user)
    me = {**ac.bearer(api.db, user), "Idempotency-Key": "submit-2010-pledge"}

    first = submit(api, case_id, me, json={"comment": "ready for review"})

    assert first.status_code == 200, first.text
    assert "idempotent-replay" not in first.headers
    after_first = snapshot(api, case_id)
    assert after_first[:2] == ("pledge", "submitted")

    replay = submit(api, case_id, me, json={"comment": "ready for review"})

    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replay"] == "true"
    assert replay.headers["etag"] == first.headers["etag"]
    assert snapshot(api, case_id) == after_first  # no second event, no second e-mail
    # Even once the case has moved on, a late retry still gets the first answer.
    superior = ac.bearer(api.db, "urban-investment.b2.secretary")
    assert api.client.post(f"/api/v1/cases/{case_id}/pledge/approve",
                           headers=superior).status_code == 200
    late = submit(api, case_id, me, json={"comment": "ready for review"})
    assert (late.status_code, late.json()) == (200, first.json())
    assert snapshot(api, case_id)[:2] == ("pledge", "approved")


def test_the_same_key_with_a_different_request_is_refused_with_422(api):
    user = "urban-investment.b2.m2"
    case_id = drafting(api, user)
    me = {**ac.bearer(api.db, user), "Idempotency-Key": "k-1"}
    assert submit(api, case_id, me, json={"comment": "first"}).status_code == 200
    before = snapshot(api, case_id)

    other_body = submit(api, case_id, me, json={"comment": "second"})
    other_action = api.client.post(f"/api/v1/cases/{case_id}/pledge/withdraw", headers=me,
                                   json={"comment": "first"})

    for refused in (other_body, other_action):
        body = assert_problem(refused, 422, "invalid-input")
        assert [r["code"] for r in body["reasons"]] == ["idempotency_key_reused"]
        assert "idempotent-replay" not in refused.headers
    assert snapshot(api, case_id) == before  # the withdrawal did not happen


def test_a_retry_while_the_first_request_is_still_running_gets_409(api):
    user = "urban-investment.b2.m3"
    case_id = drafting(api, user)
    me = {**ac.bearer(api.db, user), "Idempotency-Key": "in-flight"}
    path = f"/api/v1/cases/{case_id}/pledge/submit"
    with api.db.factory() as session, session.begin():  # the first request, mid-way
        account_id = session.scalar(sa.select(Account.id).where(Account.username == user))
        session.add(IdempotencyRecord(
            principal=f"account:{account_id}", key="in-flight", state="running",
            request_hash=idempotency.request_hash("POST", path, b""),
            created_at=api.clock.now()))
    before = snapshot(api, case_id)

    retry = submit(api, case_id, me)

    assert_problem(retry, 409, "conflict")
    assert "idempotent-replay" not in retry.headers
    assert snapshot(api, case_id) == before
    with api.db.factory() as session:
        assert session.scalar(sa.select(IdempotencyRecord.state).where(
            IdempotencyRecord.key == "in-flight")) == "running"
    # A claim whose request died long ago does not block the key for ever.
    api.clock.advance(minutes=10)
    taken_over = submit(api, case_id, me)
    assert taken_over.status_code == 200, taken_over.text
    assert snapshot(api, case_id)[:2] == ("pledge", "submitted")


def test_a_refused_action_with_a_key_replays_the_same_problem(api):
    user = "commercial-assets.b1.m1"
    case_id = drafting(api, user, with_items=False)
    me = {**ac.bearer(api.db, user), "Idempotency-Key": "empty-submit"}

    refused = submit(api, case_id, me)

    body = assert_problem(refused, 409, "transition-refused")
    assert "no_items" in [r["code"] for r in body["reasons"]]
    replay = submit(api, case_id, me)
    assert replay.status_code == 409
    assert replay.headers["content-type"] == PROBLEM_JSON
    assert replay.headers["idempotent-replay"] == "true"
    assert replay.json() == body
    # The key keeps its answer even after the pledge is fixed; a new attempt takes a new key.
    edit = api.client.put(f"/api/v1/cases/{case_id}/pledge", headers=ac.bearer(api.db, user), json={
        "summary": "s", "items": [{"criterion": "job_skill", "target": "t", "measures": "m",
                                   "deadline_on": "2010-11-01"}]})
    assert edit.status_code == 200, edit.text
    assert submit(api, case_id, me).json() == body
    assert submit(api, case_id, {**me, "Idempotency-Key": "second-try"}).status_code == 200

    # A stale-version refusal is answered the same way the second time too.
    superior = {**ac.bearer(api.db, "commercial-assets.b1.secretary"),
                "Idempotency-Key": "approve", "If-Match": '"v1"'}
    stale = api.client.post(f"/api/v1/cases/{case_id}/pledge/approve", headers=superior)
    stale_body = assert_problem(stale, 412, "stale-version")
    again = api.client.post(f"/api/v1/cases/{case_id}/pledge/approve", headers=superior)
    assert (again.status_code, again.json()) == (412, stale_body)
    assert snapshot(api, case_id)[:2] == ("pledge", "submitted")


def test_idempotency_keys_belong_to_their_caller(api):
    user = "commercial-assets.b1.m2"
    case_id = drafting(api, user)
    key = {"Idempotency-Key": "shared-key"}
    subject = {**ac.bearer(api.db, user), **key}
    superior = {**ac.bearer(api.db, "commercial-assets.b1.secretary"), **key}
    office = {**ac.bearer(api.db, "office.admin"), **key}

    # The office may not submit someone's pledge; its refusal is stored under the key ...
    body = assert_problem(submit(api, case_id, office), 409, "transition-refused")
    assert [r["code"] for r in body["reasons"]] == ["role"]

    # ... but the subject, sending the very same request with the same key, is not handed
    # the office's answer: theirs goes through.
    first = submit(api, case_id, subject)
    assert first.status_code == 200, first.text
    assert "idempotent-replay" not in first.headers
    # Nor is the key "taken" for anyone else: the superior's approval with it just happens.
    approved = api.client.post(f"/api/v1/cases/{case_id}/pledge/approve", headers=superior)
    assert approved.status_code == 200, approved.text
    assert "idempotent-replay" not in approved.headers
    assert snapshot(api, case_id)[:2] == ("pledge", "approved")
    with api.db.factory() as session:
        holders = session.scalars(sa.select(IdempotencyRecord.principal).where(
            IdempotencyRecord.key == "shared-key")).all()
    assert len(holders) == 3
