"""Remembered sign-ins (``service.api.signin``, PostgreSQL): the same principals as a fresh
lookup for every kind of token and session; a revocation or deactivation made by any writer
is honoured (by notification, and by this process's own commits without waiting for one);
an expired session is never served from memory; and while the listening connection is cut,
nothing is remembered and every answer is still right."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from models import Account, Person, WebSession
from service import migrate
from service.accounts import (
    Principal,
    create_token,
    hash_secret,
    principal_for_session,
    principal_for_token,
    sign_out,
)
from service.api.app import create_app
from service.api.signin import APPLICATION_NAME, SignInLookup
from service.clock import FixedClock
from service.db import make_engine, make_session_factory, transaction
from service.seed import seed
from service.settings import Settings
from tests.conftest import _worker, create_pg_database, drop_pg_database, require_backend

pytestmark = pytest.mark.postgres_only
NOW = datetime(2010, 9, 1, 8, tzinfo=UTC)
WAIT = 10.0  # seconds a notification may take to arrive, at most (it takes milliseconds)


@pytest.fixture(scope="module")
def pg() -> Iterator[sa.Engine]:
    """A migrated, seeded PostgreSQL database of this module's own."""
    require_backend("postgresql")
    name = f"pledgeflow_signin_{_worker()}"
    url = create_pg_database(name)
    migrate.upgrade(url)
    engine = make_engine(url)
    with transaction(make_session_factory(engine)) as s:
        seed(s)
    yield engine
    engine.dispose()
    drop_pg_database(name)


def _account(s: sa.orm.Session, name: str) -> Account:
    org_id = s.scalar(sa.text("SELECT min(id) FROM organization"))
    person = Person(name=name, email=f"{name}@example.org", organization_id=org_id)
    s.add(person)
    s.flush()
    account = Account(person_id=person.id, username=name, password_hash="x")
    s.add(account)
    s.flush()
    return account


def _web_session(s: sa.orm.Session, account: Account, cookie: str, *,
                 expires_at: datetime = NOW + timedelta(hours=1)) -> None:
    s.add(WebSession(token_hash=hash_secret(cookie), account_id=account.id,
                     csrf_token=f"csrf-{cookie}", created_at=NOW - timedelta(hours=1),
                     expires_at=expires_at))


def _sql(engine: sa.Engine, statement: str, **params: Any) -> None:
    """Committed by a plain psycopg connection: a writer outside this process's sessions."""
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(statement, params)


class Lookups:
    """Counts the lookups that reach the database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._seen)
        self.engine = engine

    def _seen(self, _conn, _cursor, statement: str, *_: Any) -> None:  # type: ignore[no-untyped-def]
        if "FROM api_token" in statement or "FROM web_session" in statement:
            self.count += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)


def _run(engine: sa.Engine, work: Callable[[SignInLookup], Awaitable[Any]]) -> Any:
    """``work(lookup)`` on a fresh event loop, once the lookup is listening."""
    async def main() -> Any:
        lookup = SignInLookup(engine)
        await lookup.open()
        try:
            await _until(lambda: lookup.remembers, "the lookup never started listening")
            return await work(lookup)
        finally:
            await lookup.close()

    return asyncio.run(main())


async def _until(condition: Callable[[], Any], message: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


async def _until_none(lookup: Callable[[], Awaitable[Principal | None]]) -> None:
    deadline = time.monotonic() + WAIT
    while await lookup() is not None:
        assert time.monotonic() < deadline, "a revoked sign-in is still honoured"
        await asyncio.sleep(0.01)


def test_remembered_principals_are_those_a_fresh_lookup_gives_for_every_kind(pg):
    with transaction(make_session_factory(pg)) as s:
        live, gone = _account(s, "signin_live"), _account(s, "signin_gone")
        tokens = {"person": create_token(s, name="t", now=NOW, account_id=live.id)[0],
                  "flow": create_token(s, name="f", now=NOW, flow_name="rollover")[0],
                  "unknown": "no-such-token"}
        tokens["revoked"], row = create_token(s, name="r", now=NOW, account_id=live.id)
        row.revoked_at = NOW
        tokens["deactivated"] = create_token(s, name="d", now=NOW, account_id=gone.id)[0]
        gone.active = False
        cookies = {"live": "c-live", "expired": "c-expired", "deactivated": "c-gone",
                   "unknown": "c-unknown"}
        _web_session(s, live, "c-live")
        _web_session(s, live, "c-expired", expires_at=NOW - timedelta(seconds=1))
        _web_session(s, gone, "c-gone")
    counted = Lookups(pg)

    async def twice(lookup: SignInLookup):  # type: ignore[no-untyped-def]
        answers = []
        for _ in range(2):
            answers.append(({k: await lookup.for_token(t) for k, t in tokens.items()},
                            {k: await lookup.for_session(c, NOW) for k, c in cookies.items()}))
        return answers

    try:
        first, second = _run(pg, twice)
    finally:
        counted.close()
    assert first == second
    by_token, by_session = first
    with pg.connect() as connection:
        assert by_token == {k: principal_for_token(connection, t) for k, t in tokens.items()}
        assert by_session == {k: principal_for_session(connection, c, NOW)
                              for k, c in cookies.items()}
    assert by_token["person"] == Principal(person_id=live.person_id, account_id=live.id,
                                           via="token")
    assert by_token["flow"] == Principal(flow="rollover", via="token")
    assert by_session["live"] == Principal(person_id=live.person_id, account_id=live.id,
                                           via="session", csrf_token="csrf-c-live")
    assert [k for k, p in by_token.items() if p is None] == ["unknown", "revoked", "deactivated"]
    assert [k for k, p in by_session.items() if p is None] == ["expired", "deactivated",
                                                               "unknown"]
    # the three who resolved came from memory the second time; the six who did not, never
    assert counted.count == 9 + 6


def test_a_revocation_or_deactivation_by_another_writer_is_honoured(pg):
    with transaction(make_session_factory(pg)) as s:
        one, two = _account(s, "signin_revoked"), _account(s, "signin_deactivated")
        revoked = create_token(s, name="t", now=NOW, account_id=one.id)[0]
        flow = create_token(s, name="f", now=NOW, flow_name="reminders")[0]
        deactivated = create_token(s, name="t", now=NOW, account_id=two.id)[0]
        _web_session(s, one, "c-revoked")
        _web_session(s, two, "c-deactivated")

    async def work(lookup: SignInLookup) -> None:
        for token in (revoked, flow, deactivated):
            assert await lookup.for_token(token) is not None
        for cookie in ("c-revoked", "c-deactivated"):
            assert await lookup.for_session(cookie, NOW) is not None
        await asyncio.to_thread(_sql, pg, "UPDATE api_token SET revoked_at = now() "
                                "WHERE token_hash = %(h)s", h=hash_secret(revoked))
        await _until_none(lambda: lookup.for_token(revoked))
        await asyncio.to_thread(_sql, pg, "DELETE FROM api_token WHERE token_hash = %(h)s",
                                h=hash_secret(flow))
        await _until_none(lambda: lookup.for_token(flow))
        await asyncio.to_thread(_sql, pg, "UPDATE web_session SET revoked_at = now() "
                                "WHERE token_hash = %(h)s", h=hash_secret("c-revoked"))
        await _until_none(lambda: lookup.for_session("c-revoked", NOW))
        await asyncio.to_thread(_sql, pg, "UPDATE account SET active = false WHERE id = %(i)s",
                                i=two.id)
        await _until_none(lambda: lookup.for_token(deactivated))
        await _until_none(lambda: lookup.for_session("c-deactivated", NOW))

    _run(pg, work)


def test_this_process_s_own_sign_out_is_honoured_without_waiting_for_the_notification(pg):
    """The web_session trigger is dropped for the test: only the commit hook can forget."""
    with transaction(make_session_factory(pg)) as s:
        _web_session(s, _account(s, "signin_local"), "c-local")

    def sign_out_here() -> None:
        with transaction(make_session_factory(pg)) as s:
            sign_out(s, "c-local", NOW)

    async def work(lookup: SignInLookup) -> Principal | None:
        assert await lookup.for_session("c-local", NOW) is not None
        await asyncio.to_thread(sign_out_here)
        return await lookup.for_session("c-local", NOW)

    _sql(pg, "ALTER TABLE web_session DISABLE TRIGGER web_session_sign_in_changed")
    try:
        assert _run(pg, work) is None
    finally:
        _sql(pg, "ALTER TABLE web_session ENABLE TRIGGER web_session_sign_in_changed")


def test_a_remembered_session_is_never_used_past_its_expiry(pg):
    with transaction(make_session_factory(pg)) as s:
        _web_session(s, _account(s, "signin_expiring"), "c-expiring",
                     expires_at=NOW + timedelta(minutes=5))

    async def work(lookup: SignInLookup) -> tuple[Any, Any]:
        return (await lookup.for_session("c-expiring", NOW),
                await lookup.for_session("c-expiring", NOW + timedelta(minutes=5)))

    before, at_expiry = _run(pg, work)
    assert before is not None and at_expiry is None


def test_while_the_listening_connection_is_cut_nothing_is_remembered(pg):
    with transaction(make_session_factory(pg)) as s:
        account = _account(s, "signin_cut")
        token = create_token(s, name="t", now=NOW, account_id=account.id)[0]
    counted = Lookups(pg)

    def cut() -> int:
        with pg.connect() as connection:
            return len(connection.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": APPLICATION_NAME}).all())

    async def work(lookup: SignInLookup) -> None:
        assert await lookup.for_token(token) is not None
        assert await asyncio.to_thread(cut) == 1
        await _until(lambda: not lookup.remembers, "the cut went unnoticed")
        before = counted.count
        assert await lookup.for_token(token) is not None
        assert counted.count == before + 1, "a principal remembered while not listening"
        # back: listening again, and remembering
        await _until(lambda: lookup.remembers, "the listener did not reconnect")
        assert await lookup.for_token(token) is not None
        after = counted.count
        assert await lookup.for_token(token) is not None
        assert counted.count == after

    try:
        _run(pg, work)
    finally:
        counted.close()


def test_over_http_a_revoked_token_is_refused_by_the_next_request(pg):
    with transaction(make_session_factory(pg)) as s:
        account = _account(s, "signin_http")
        token, row = create_token(s, name="t", now=NOW, account_id=account.id)
    app = create_app(Settings(database_url=pg.url.render_as_string(hide_password=False),
                              dispatcher=False), clock=FixedClock(NOW))
    bearer = {"Authorization": f"Bearer {token}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + WAIT
        while not app.state.sign_in.remembers:
            assert time.monotonic() < deadline, "the app never started listening"
            time.sleep(0.01)
        for _ in range(3):
            assert client.get("/api/v1/auth/me", headers=bearer).status_code == 200
        assert client.delete(f"/api/v1/tokens/{row.id}", headers=bearer).status_code == 204
        response = client.get("/api/v1/auth/me", headers=bearer)
    assert response.status_code == 401, response.text
