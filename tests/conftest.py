"""Test databases: every DB test runs on SQLite *and* PostgreSQL.

Each backend gets a fresh database, migrated to head with Alembic (so the migrations are what
the tests exercise) and seeded with the notice and demo data once per session. A test gets a
``session`` inside a transaction that is rolled back afterwards; tests that need real commits
and several connections (concurrency) ask for ``fresh_db``, a private copy.

PostgreSQL is expected at 127.0.0.1:5432 (trust auth, database ``test``), or at
``PLEDGEFLOW_TEST_PG_ADMIN_URL``. Missing, its tests are skipped on a developer machine and the
run *fails* when ``CI=true``.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service import migrate
from service.db import make_engine, make_session_factory
from service.seed import seed

PG_ADMIN_URL = os.environ.get("PLEDGEFLOW_TEST_PG_ADMIN_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives Debian's Chromium through Playwright (tests/test_browser.py)")


@dataclass
class Database:
    """One test database: its URL, engine and session factory."""

    backend: str
    url: str
    engine: sa.Engine
    factory: sessionmaker[Session]


def _pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not available"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _admin() -> sa.Engine:
    return sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(
        hide_password=False)


def create_pg_database(name: str, template: str | None = None) -> str:
    """A new, empty (or copied) PostgreSQL database; returns its URL."""
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"' +
                             (f' TEMPLATE "{template}"' if template else "")))
    admin.dispose()
    return _pg_url(name)


def drop_pg_database(name: str) -> None:
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def require_backend(backend: str) -> None:
    """Skip (fail in CI) when the backend is not reachable."""
    if backend != "postgresql":
        return
    problem = _pg_available()
    if problem is None:
        return
    message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {problem}"
    if IN_CI:
        pytest.fail(message + " (CI=true: PostgreSQL is required)", pytrace=False)
    pytest.skip(message)


def _worker() -> str:
    """A name unique to this test process (xdist worker and pid), so that parallel runs on one
    machine never share or drop each other's databases."""
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


@pytest.fixture(scope="session", params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[Database]:
    """A migrated, seeded database for the session, per backend."""
    backend = request.param
    require_backend(backend)
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'pledgeflow.db'}"
    else:
        url = create_pg_database(f"pledgeflow_test_{_worker()}")
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        seed(session, demo=True)
    yield Database(backend, url, engine, factory)
    engine.dispose()
    if backend == "postgresql":
        drop_pg_database(f"pledgeflow_test_{_worker()}")


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """A session whose work is rolled back after the test (commits become savepoints)."""
    with db.engine.connect() as conn:
        outer = conn.begin()
        s = Session(bind=conn, join_transaction_mode="create_savepoint",
                    expire_on_commit=False)
        try:
            yield s
        finally:
            s.close()
            outer.rollback()


@contextmanager
def private_database(db: Database, directory: Path, *, pool_size: int = 20
                     ) -> Iterator[Database]:
    """A private, committed copy of the seeded database: SQLite by the backup API (a
    consistent copy, WAL included), PostgreSQL from the seeded database as a template."""
    name = f"pledgeflow_copy_{uuid.uuid4().hex[:10]}"
    if db.backend == "sqlite":
        path = directory / f"{name}.db"
        source = sqlite3.connect(sa.engine.make_url(db.url).database)
        target = sqlite3.connect(path)
        source.backup(target)
        source.close()
        target.close()
        url = f"sqlite:///{path}"
    else:
        db.engine.dispose()  # a template database must have no other connections
        url = create_pg_database(name, template=f"pledgeflow_test_{_worker()}")
    engine = make_engine(url, pool_size=pool_size)
    try:
        yield Database(db.backend, url, engine, make_session_factory(engine))
    finally:
        engine.dispose()
        if db.backend == "postgresql":
            drop_pg_database(name)


@pytest.fixture
def fresh_db(db: Database, tmp_path: Path) -> Iterator[Database]:
    """A private, committed copy of the seeded database (for multi-connection tests)."""
    with private_database(db, tmp_path) as copy:
        yield copy
