"""Tampering with the history, found by the real command line: ``pledgeflow audit verify``.

Each kind of tampering the issue names — an event updated, deleted, reordered, or the tail
truncated — is done with plain SQL on its own copy of a PostgreSQL database whose events were
written by the engine, and ``audit verify`` (a subprocess, as an auditor runs it) must name the
first broken event and exit non-zero. A truncated tail with the head row rewound breaks no link,
so it is caught only through the head hash an earlier ``audit export`` printed (``--head``).
``tests/test_history.py`` covers the same cases (and more) through ``history.verify`` in-process.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from service.db import make_engine
from tests import fault_support
from tests.conftest import create_pg_database, drop_pg_database
from tests.fault_support import EXE, ROOT, audit_verify, prepare

pytestmark = pytest.mark.fault

BROKEN = re.compile(r"^error: history broken at event (\d+): (.+)$", re.M)

pg_url = fault_support.pg_url


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PLEDGEFLOW_DATABASE_URL": url}, timeout=300)


@pytest.fixture
def chain(pg_url: str) -> dict[str, Any]:
    """A database with a real chain (cases opened, then approved through the engine), its
    exported head hash, and its last seq."""
    from service.clock import SystemClock
    from service.db import make_session_factory
    from service.workflow import engine as wf
    from service.workflow.roles import Actor

    cases, _ = prepare(pg_url, 12)
    engine = make_engine(pg_url)
    try:
        with make_session_factory(engine)() as s, s.begin():
            for case_id in cases[:6]:
                boss = s.execute(sa.text(
                    'SELECT p.person_id FROM "case" c JOIN organization o ON o.id = '
                    "c.organization_id JOIN position p ON p.organization_id = o.parent_id "
                    "AND p.role = 'secretary' WHERE c.id = :id"), {"id": case_id}).scalar_one()
                wf.apply(s, case_id=case_id, action="approve", actor=Actor(person_id=boss),
                         clock=SystemClock())
    finally:
        engine.dispose()
    audit_verify(pg_url)
    export = _cli(pg_url, "audit", "export", "--period", "2010", "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    head = re.search(r"head ([0-9a-f]{64})", export.stderr)
    assert head, export.stderr
    return {"url": pg_url, "head": head.group(1), "last": _scalar(pg_url, "max(seq)")}


def _scalar(url: str, expression: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT {expression} FROM event")).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture
def copy(chain: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Run SQL on a private copy of the chain's database: ``copy(statements...) -> url``."""
    made: list[str] = []
    source = sa.engine.make_url(str(chain["url"])).database

    def tamper(*statements: str) -> str:
        name = f"pledgeflow_fault_{uuid.uuid4().hex[:10]}"
        url = create_pg_database(name, template=source)
        made.append(name)
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()
        return url

    yield tamper, chain
    for name in made:
        drop_pg_database(name)


def _broken_at(run: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    assert run.returncode != 0, f"tampering not found:\n{run.stdout}"
    match = BROKEN.search(run.stderr)
    assert match, run.stderr
    return int(match.group(1)), match.group(2)


def test_an_updated_event_is_found(copy: tuple) -> None:
    tamper, chain = copy
    seq = chain["last"] // 2
    url = tamper(f"UPDATE event SET comment = 'forged' WHERE seq = {seq}")
    assert _broken_at(_cli(url, "audit", "verify"))[0] == seq


def test_a_deleted_event_is_found(copy: tuple) -> None:
    tamper, chain = copy
    seq = chain["last"] // 2
    url = tamper(f"DELETE FROM event WHERE seq = {seq}")
    at, problem = _broken_at(_cli(url, "audit", "verify"))
    assert at in (seq - 1, seq, seq + 1), problem


def test_two_reordered_events_are_found(copy: tuple) -> None:
    tamper, chain = copy
    seq = chain["last"] - 3  # among the approvals
    url = tamper(f"UPDATE event SET seq = -1 WHERE seq = {seq}",
                 f"UPDATE event SET seq = {seq} WHERE seq = {seq + 1}",
                 f"UPDATE event SET seq = {seq + 1} WHERE seq = -1")
    assert _broken_at(_cli(url, "audit", "verify"))[0] == seq


def test_a_truncated_tail_is_found_through_the_exported_head(copy: tuple) -> None:
    tamper, chain = copy
    keep = chain["last"] - 3
    url = tamper(f"DELETE FROM event WHERE seq > {keep}",
                 f"UPDATE chain_head SET seq = {keep}, "
                 f"hash = (SELECT hash FROM event WHERE seq = {keep})")
    alone = _cli(url, "audit", "verify")
    assert alone.returncode == 0, alone.stderr  # no link is broken: invisible alone
    at, problem = _broken_at(_cli(url, "audit", "verify", "--head", str(chain["head"])))
    assert at == keep and "exported head" in problem
