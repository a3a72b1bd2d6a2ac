"""Errors and operations over HTTP: every 4xx/5xx is RFC 9457 problem+json with a stable type
(and every reason of a refused transition), bodies are size-limited, a database outage is a
503 the service recovers from by itself, and /healthz, /metrics, /openapi.json, /docs answer —
on both databases.

The real app (``create_app``) runs on a private, committed copy of the seeded database (like
``fresh_db``, but one per module and backend) with a FixedClock the tests move forward; period
2010 is open. Each test works on its own members' cases.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models import Case, Event, Notification
from service.api.app import create_app
from service.clock import FixedClock
from service.settings import Settings
from service.workflow.roles import Actor
from tests import apiclient as ac
from tests import builders as b
from tests.conftest import (
    Database,
    _admin,
    private_database,
)

PROBLEM_JSON = "application/problem+json"
PROBLEM = "urn:pledgeflow:problem:"
# What must never reach a client in an error body.
LEAKS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "sqlite3", "OperationalError",
         "sqlalche.me", "SELECT", "postgresql://")


@dataclass
class Api:
    db: Database
    clock: FixedClock
    app: FastAPI
    client: TestClient

    def app_with(self, **settings) -> TestClient:  # type: ignore[no-untyped-def]
        """A client of a second app on the same database (its own settings and metrics)."""
        app = create_app(Settings(**{"database_url": self.db.url, "dispatcher": False,
                                     **settings}), clock=self.clock)
        return TestClient(app, raise_server_exceptions=False)


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
    yield Api(private, clock, app, client)
    client.close()


def assert_problem(response, status: int, slug: str) -> dict:  # type: ignore[no-untyped-def]
    """An RFC 9457 problem of this status and stable type, with nothing internal in it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    for leak in LEAKS:
        assert leak not in response.text
    return body


def member_case(api: Api, username: str, target: tuple[str, str] | None = None, *,
                items: bool = True) -> int:
    """The member's case id, walked through the engine (committed) to ``target``; a draft
    gets two complete items unless ``items`` is false."""
    with api.db.factory() as session, session.begin():
        case = b.member_case(session, username)
        if target is not None:
            b.drive(session, case, target, api.clock)
        if target == ("pledge", "drafting") and items:
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


def codes(body: dict) -> list[str]:
    assert all(set(r) == {"code", "message"} and r["message"] for r in body["reasons"])
    return [r["code"] for r in body["reasons"]]


# --- problem+json for every client mistake ----------------------------------------------------


def test_client_mistakes_are_problem_json_with_a_stable_type(api):
    user = "industrial-assets.b1.m1"
    case_id = member_case(api, user, ("pledge", "drafting"))
    elsewhere = member_case(api, "industrial-assets.b2.m1")
    me = ac.bearer(api.db, user)
    pledge = f"/api/v1/cases/{case_id}/pledge"
    before = snapshot(api, case_id)
    c = api.client

    assert_problem(c.get("/api/v1/no-such-thing", headers=me), 404, "not-found")
    assert_problem(c.get("/no-such-page"), 404, "not-found")
    assert_problem(c.get("/api/v1/cases/999999", headers=me), 404, "not-found")
    # Another member's case answers exactly like a missing one (no probing by id).
    hidden = assert_problem(c.get(f"/api/v1/cases/{elsewhere}", headers=me), 404, "not-found")
    assert str(elsewhere) in hidden["detail"]
    assert_problem(c.post("/api/v1/tokens", json={"name": "x"}), 401, "unauthenticated")
    wrong_method = c.delete("/api/v1/cases", headers=me)
    assert_problem(wrong_method, 405, "method-not-allowed")
    assert "GET" in wrong_method.headers["allow"]
    assert_problem(c.get("/api/v1/cases/not-a-number", headers=me), 422, "invalid-input")
    assert_problem(c.get("/api/v1/cases?limit=0", headers=me), 422, "invalid-input")
    broken = c.put(pledge, headers={**me, "content-type": "application/json"},
                   content=b'{"summary": "half a documen')
    assert_problem(broken, 422, "invalid-input")

    # A body that breaks several rules of the schema lists every one of them.
    invalid = c.put(pledge, headers=me, json={
        "summary": "s", "colour": "red",
        "items": [{"target": ""}, {"target": "t", "deadline_on": "some day"}]})
    body = assert_problem(invalid, 422, "invalid-input")
    messages = " | ".join(r["message"] for r in body["reasons"])
    assert set(codes(body)) == {"invalid_field"}
    for field in ("colour", "items.0.target", "items.1.deadline_on"):
        assert field in messages, messages
    assert len(body["reasons"]) == 3

    assert snapshot(api, case_id) == before


def test_a_refused_transition_is_409_and_lists_every_reason(api):
    # An empty pledge promises nothing checkable.
    empty = member_case(api, "industrial-assets.b1.m2", ("pledge", "drafting"), items=False)
    subject = ac.bearer(api.db, "industrial-assets.b1.m2")
    before = snapshot(api, empty)
    refused = api.client.post(f"/api/v1/cases/{empty}/pledge/submit", headers=subject)
    body = assert_problem(refused, 409, "transition-refused")
    assert "no_items" in codes(body)
    assert snapshot(api, empty) == before

    # A return must say why (blank is not a reason either).
    submitted = member_case(api, "industrial-assets.b1.m3", ("pledge", "submitted"))
    superior = ac.bearer(api.db, "industrial-assets.b1.secretary")
    before = snapshot(api, submitted)
    for payload in ({}, {"json": {"comment": "   "}}):
        response = api.client.post(f"/api/v1/cases/{submitted}/pledge/return",
                                   headers=superior, **payload)
        assert codes(assert_problem(response, 409, "transition-refused")) == ["comment_required"]
    assert snapshot(api, submitted) == before

    # Two rules broken at once: both are reported, so they can be fixed in one go.
    noticed = member_case(api, "industrial-assets.b2.m2", ("pledge", "under_notice"))
    with api.db.factory() as session, session.begin():
        b.act(session, session.get(Case, noticed), "file_objection", Actor.public(), api.clock,
              data={"body": "the measures were never discussed with the branch"})
    before = snapshot(api, noticed)
    early = api.client.post(f"/api/v1/cases/{noticed}/pledge/close_notice",
                            headers=ac.bearer(api.db, flow="close_notices"))
    body = assert_problem(early, 409, "transition-refused")
    assert sorted(codes(body)) == ["notice_running", "open_objection"]
    assert snapshot(api, noticed) == before


def test_an_unexpected_error_is_a_500_problem_without_internals(api):
    client = api.app_with()

    @client.app.get("/api/v1/explode")
    def explode() -> None:
        raise RuntimeError("internal detail: password=hunter2")

    response = client.get("/api/v1/explode")

    assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    client.app.state.engine.dispose()


# --- request size ------------------------------------------------------------------------------


def test_request_bodies_over_the_limit_are_refused_with_413(api):
    user = "industrial-assets.b2.m3"
    case_id = member_case(api, user, ("pledge", "drafting"))
    me = {**ac.bearer(api.db, user), "content-type": "application/json"}
    pledge = f"/api/v1/cases/{case_id}/pledge"
    small = api.app_with(max_body_bytes=2048)
    big = json.dumps({"summary": "x" * 3000, "items": []}).encode()
    before = snapshot(api, case_id)

    declared = small.put(pledge, headers=me, content=big)
    streamed = small.put(pledge, headers=me,
                         content=(big[i:i + 500] for i in range(0, len(big), 500)))

    for response in (declared, streamed):
        body = assert_problem(response, 413, "payload-too-large")
        assert "2048" in body["detail"]
    assert "content-length" not in streamed.request.headers  # sent chunked
    assert snapshot(api, case_id) == before
    # Under the limit the same request goes through.
    fits = small.put(pledge, headers=me, content=json.dumps({"summary": "x" * 1000}).encode())
    assert fits.status_code == 200, fits.text

    # The default limit is 256 KiB: just over is 413, just under reaches validation.
    over = b'{"summary": "' + b"x" * (256 * 1024) + b'"}'
    under = b'{"summary": "' + b"x" * (255 * 1024) + b'"}'
    assert_problem(api.client.put(pledge, headers=me, content=over), 413, "payload-too-large")
    assert_problem(api.client.put(pledge, headers=me, content=under), 422, "invalid-input")
    small.app.state.engine.dispose()


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(api):
    """An endless upload is not read to its end: the server answers 413 and stops pulling."""
    user = "dongfang-assets.b1.m1"
    case_id = member_case(api, user, ("pledge", "drafting"))
    app = api.app_with(max_body_bytes=2048).app
    token = ac.bearer(api.db, user)["Authorization"]
    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b" " * 1024, "more_body": pulled < 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    path = f"/api/v1/cases/{case_id}/pledge"
    asyncio.run(app({
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"authorization", token.encode())]}, receive, send))

    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled <= 4  # about 2 KiB read, not 1 MiB
    app.state.engine.dispose()


# --- database outage ---------------------------------------------------------------------------


@contextmanager
def postgres_unreachable(db: Database) -> Iterator[None]:
    """Refuse new connections to the database and cut the open ones; restore afterwards."""
    name = sa.engine.make_url(db.url).database
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"),
                         {"name": name})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def test_a_database_outage_is_a_503_problem_and_the_service_recovers_by_itself(api, tmp_path):
    case_id = member_case(api, "dongfang-assets.b1.m2", ("pledge", "approved"))
    flow = ac.bearer(api.db, flow="drive_period")
    publish = {"headers": {**flow, "Idempotency-Key": "publish-once"}}
    requests = [("GET", "/healthz", {}), ("GET", "/api/v1/cases", {"headers": flow}),
                ("GET", f"/api/v1/cases/{case_id}", {"headers": flow}),
                ("POST", f"/api/v1/cases/{case_id}/pledge/publish", publish)]
    if api.db.backend == "postgresql":
        client = api.client
        assert client.get("/healthz").status_code == 200  # pooled connections exist
        outage = postgres_unreachable(api.db)
    else:
        # SQLite: the app points at a path it cannot open (a directory) ...
        path = tmp_path / "pledgeflow.db"
        path.mkdir()
        client = TestClient(create_app(Settings(database_url=f"sqlite:///{path}",
                                                dispatcher=False), clock=api.clock),
                            raise_server_exceptions=False)
        outage = sqlite_unreadable_until_restored(api.db, path)

    with outage:
        for method, url, kwargs in requests:
            response = client.request(method, url, **kwargs)
            assert_problem(response, 503, "database-unavailable")
            assert int(response.headers["retry-after"]) > 0
        assert client.get("/metrics").status_code == 200  # still scrapeable

    # Back without a restart: the same app answers again, and the publish that failed
    # during the outage can be retried with the same key.
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    assert client.get(f"/api/v1/cases/{case_id}", headers=flow).json()["status"] == "approved"
    retried = client.request("POST", f"/api/v1/cases/{case_id}/pledge/publish", **publish)
    assert retried.status_code == 200, retried.text
    assert "idempotent-replay" not in retried.headers
    assert client.get(f"/api/v1/cases/{case_id}", headers=flow).json()["status"] == "under_notice"
    if client is not api.client:
        client.app.state.engine.dispose()


@contextmanager
def sqlite_unreadable_until_restored(db: Database, path: Path) -> Iterator[None]:
    """While open, ``path`` is a directory; afterwards it is a copy of the database."""
    try:
        yield
    finally:
        path.rmdir()
        source, target = sqlite3.connect(sa.engine.make_url(db.url).database), sqlite3.connect(path)
        source.backup(target)
        source.close()
        target.close()


# --- operations: health, metrics, API description --------------------------------------------


def samples(text: str) -> dict[str, list]:
    """Prometheus samples by sample name."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list], name: str, **labels: str) -> float | None:
    matches = [s.value for s in found.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) <= 1, (name, labels, matches)
    return matches[0] if matches else None


def test_metrics_count_requests_latencies_transitions_and_the_outbox(api):
    client = api.app_with()  # a new app: its counters start at zero
    user = "dongfang-assets.b2.m1"
    case_id = member_case(api, user, ("pledge", "drafting"))
    submit = f"/api/v1/cases/{case_id}/pledge/submit"
    superior = ac.bearer(api.db, "dongfang-assets.b2.secretary")

    assert client.post(submit, headers=superior).status_code == 409  # not theirs to submit
    assert client.post(submit, headers=ac.bearer(api.db, user)).status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}", headers=superior).status_code == 200
    assert client.get(f"/api/v1/cases/{case_id}/no-such-thing").status_code == 404

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    route = "/api/v1/cases/{case_id}/pledge/submit"
    requests = "pledgeflow_http_requests_total"
    assert value(found, requests, method="POST", route=route, status="200") == 1
    assert value(found, requests, method="POST", route=route, status="409") == 1
    assert value(found, requests, method="GET", route="/api/v1/cases/{case_id}",
                 status="200") == 1
    # Routes are labelled by template, never by raw path (one series per route, not per id).
    assert not [s for s in found[requests] if str(case_id) in s.labels["route"]]
    latency = "pledgeflow_http_request_duration_seconds"
    assert value(found, latency + "_count", route=route) == 2
    assert value(found, latency + "_sum", route=route) > 0
    assert value(found, latency + "_bucket", route=route, le="+Inf") == 2
    # Only the transition that happened counts.
    assert value(found, "pledgeflow_transitions_total", action="submit") == 1
    with api.db.factory() as session:
        pending = session.scalar(sa.select(sa.func.count()).select_from(Notification)
                                 .where(Notification.status == "pending"))
    assert pending > 0  # the submission told the superior
    assert value(found, "pledgeflow_outbox_notifications", status="pending") == pending
    client.app.state.engine.dispose()


def test_healthz_checks_the_database_and_the_api_describes_itself(api):
    health = api.client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok"}

    spec = api.client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path, method in (("/api/v1/auth/login", "post"), ("/api/v1/tokens", "post"),
                         ("/api/v1/cases", "get"), ("/api/v1/cases/{case_id}", "get"),
                         ("/api/v1/cases/{case_id}/pledge", "put"),
                         ("/api/v1/cases/{case_id}/pledge/submit", "post")):
        assert method in paths.get(path, {}), path
    assert len([p for p in paths if p.startswith("/api/v1/")]) >= 10

    docs = api.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
