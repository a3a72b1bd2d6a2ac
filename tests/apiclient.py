"""Helpers for tests of the HTTP API: an app on a committed test database, and sign-ins.

The app is the real one (``create_app``) on a real database; requests go through Starlette's
TestClient in-process. The clock is a FixedClock the test moves.
"""

from __future__ import annotations

from datetime import date

from fastapi.testclient import TestClient

from service import accounts
from service.api.app import create_app
from service.clock import FixedClock, start_of_day
from service.periods import get_period, open_period
from service.settings import Settings
from service.workflow.roles import Actor
from tests.conftest import Database

DEMO_PASSWORD = "pledgeflow-demo"


def make_client(db: Database, clock: FixedClock | None = None) -> TestClient:
    """A client for the real app on this database (raise_server_exceptions off: 500s show)."""
    app = create_app(Settings(database_url=db.url, dispatcher=False), clock=clock or FixedClock())
    return TestClient(app, raise_server_exceptions=False)


def open_2010(db: Database, clock: FixedClock, day: date = date(2010, 6, 1)) -> None:
    """Open period 2010 (cases for everyone) with the clock at ``day``; committed."""
    clock.set(start_of_day(day))
    with db.factory() as session, session.begin():
        open_period(session, get_period(session, "2010"), actor=Actor(flow="test"), clock=clock)


def login(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
    """Sign in with the session cookie; returns the CSRF header to send on unsafe requests."""
    response = client.post("/api/v1/auth/login",
                           json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"X-CSRF-Token": response.json()["csrf_token"]}


def bearer(db: Database, username: str | None = None, *, flow: str | None = None) -> dict:
    """An Authorization header with a fresh API token for a user or a flow."""
    import sqlalchemy as sa

    from models import Account

    with db.factory() as session, session.begin():
        account_id = None
        if username is not None:
            account_id = session.scalar(sa.select(Account.id).where(Account.username == username))
        token, _ = accounts.create_token(session, name="test", now=FixedClock().now(),
                                         account_id=account_id, flow_name=flow)
    return {"Authorization": f"Bearer {token}"}
