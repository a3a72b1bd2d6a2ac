"""The ``pledgeflow`` console script, run for real as a subprocess against SQLite files (and once
against PostgreSQL): schema, seed, periods, the simulated campaign, audit verify and export, and
readable refusals of bad input.

Starting the command costs seconds, and the simulated campaign about twenty, so the independent
command sequences start together in background threads when the module begins; each test waits
only for the results it checks. Every sequence works on its own database (SQLite files are copied
with the backup API), so nothing is shared between sequences that write.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from service import migrate
from service.history import HASHED_FIELDS
from tests.conftest import (
    _pg_available,
    create_pg_database,
    drop_pg_database,
    require_backend,
)

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).with_name("pledgeflow")
HEAD_REVISION = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
PG_NAME = f"pledgeflow_cli_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


@dataclass(frozen=True)
class Run:
    """One finished command: its arguments, exit code and both streams."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return (f"pledgeflow {' '.join(self.args)} -> exit {self.code}\n--- stdout\n{self.out}"
                f"\n--- stderr\n{self.err}")


def pledgeflow(url: str, *args: str, timeout: float = 120) -> Run:
    """Run the installed console script with its database set by the environment."""
    env = {**os.environ, "PLEDGEFLOW_DATABASE_URL": url, "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run([str(EXE), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return Run(args, done.returncode, done.stdout, done.stderr)


def ok(run: Run) -> Run:
    assert run.code == 0, str(run)
    assert "Traceback" not in run.out + run.err, str(run)
    return run


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def copy_db(source: Path, target: Path) -> Path:
    """A consistent copy of a SQLite database (WAL included), via the backup API."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def execute(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


def tables(path: Path) -> set[str]:
    return {name for (name,) in query(path, "select name from sqlite_master where type='table'")}


def db_head(path: Path) -> tuple[int, str]:
    ((seq, head_hash),) = query(path, "select seq, hash from chain_head where id = 1")
    return seq, head_hash


# --- the command sequences, started together -----------------------------------------------


class Background:
    """A thread pool running command sequences; results are looked up by name."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.pool = ThreadPoolExecutor(max_workers=8)
        self.futures: dict[str, Future[Any]] = {}

    def start(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.futures[name] = self.pool.submit(fn, self, *args)

    def result(self, name: str) -> Any:
        """The step's result; a step started by another step's thread is waited for until
        that thread has started it, or has ended without doing so."""
        deadline = time.monotonic() + 600
        while name not in self.futures:
            starters = [f for n, f in list(self.futures.items()) if n != name]
            if all(f.done() for f in starters) and name not in self.futures:
                pytest.fail(f"{name!r} never started (an earlier step failed: see its test)")
            if time.monotonic() > deadline:
                pytest.fail(f"{name!r} did not start within 600 s")
            time.sleep(0.1)
        return self.futures[name].result(timeout=600)


def _campaign(bg: Background) -> dict[str, Run]:
    """Empty file → schema → seed twice → demo → period open → the simulated campaign."""
    path = bg.base / "campaign.db"
    path.touch()  # an empty file, as a user might create
    url, runs = sqlite_url(path), {}
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("upgrade", ("db", "upgrade")), ("seed", ("seed",)), ("seed again", ("seed",)),
        ("seed demo", ("seed", "--demo")),
        ("period open", ("period", "open", "2010", "--as-of", "2010-06-01")),
        ("simulate", ("simulate", "--period", "2010")),
    ]
    for name, args in steps:
        runs[name] = pledgeflow(url, *args, timeout=600 if name == "simulate" else 120)
        if runs[name].code != 0:
            break
        if name == "upgrade":
            bg.start("roundtrip", _roundtrip, copy_db(path, bg.base / "roundtrip.db"))
        if name == "period open":
            bg.start("refusals", _refusals, copy_db(path, bg.base / "refusals.db"))
    return runs


def _roundtrip(bg: Background, path: Path) -> dict[str, Any]:
    """A migrated database taken down to base and back up again."""
    url = sqlite_url(path)
    down = pledgeflow(url, "db", "downgrade", "base")
    tables_down = tables(path)
    up = pledgeflow(url, "db", "upgrade")
    return {"down": down, "tables down": tables_down, "up": up, "tables up": tables(path)}


REFUSALS: dict[str, tuple[tuple[str, ...], str]] = {
    "unknown period": (("audit", "export", "--period", "1999"), "no period '1999'"),
    "bad format": (("audit", "export", "--period", "2010", "--format", "xml"),
                   "--format must be jsonl or csv"),
    "bad date": (("period", "rollover", "2010", "--as-of", "2010-13-45"),
                 "--as-of must be a date"),
    "not ended": (("period", "rollover", "2010", "--as-of", "2010-07-01"),
                  "the period has not ended"),
}


def _refusals(bg: Background, path: Path) -> dict[str, Any]:
    """Bad input against a seeded database with period 2010 open (and not ended)."""
    before = query(path, "select (select count(*) from event), status from period "
                         "where code = '2010'")
    runs = dict(bg.pool.map(lambda item: (item[0], pledgeflow(sqlite_url(path), *item[1][0])),
                            REFUSALS.items()))
    after = query(path, "select (select count(*) from event), status from period "
                        "where code = '2010'")
    return {"runs": runs, "before": before, "after": after}


def _postgresql(bg: Background) -> dict[str, Any]:
    url = create_pg_database(PG_NAME)
    runs = {}
    for name, args in [("upgrade", ("db", "upgrade")), ("seed", ("seed",)),
                       ("period open", ("period", "open", "2010", "--as-of", "2010-06-01")),
                       ("verify", ("audit", "verify"))]:
        runs[name] = pledgeflow(url, *args)
        if runs[name].code != 0:
            break
    return {"url": url, "runs": runs}


@pytest.fixture(scope="module")
def bg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    assert EXE.is_file(), f"the console script is not installed next to {sys.executable}"
    background = Background(tmp_path_factory.mktemp("cli"))
    background.start("campaign", _campaign)
    pg = _pg_available() is None
    if pg:
        background.start("postgresql", _postgresql)
    yield background
    background.pool.shutdown(wait=True, cancel_futures=True)
    if pg:
        drop_pg_database(PG_NAME)


@pytest.fixture(scope="module")
def campaign(bg: Background) -> dict[str, Run]:
    return bg.result("campaign")


@pytest.fixture(scope="module")
def simulated(bg: Background, campaign: dict[str, Run]) -> Path:
    """The campaign database after a whole simulated period."""
    ok(campaign["simulate"])
    return bg.base / "campaign.db"


@pytest.fixture(scope="module")
def audits(bg: Background, simulated: Path) -> dict[str, Any]:
    """Audit commands on the simulated database and on tampered and truncated copies of it."""
    seq, head_hash = db_head(simulated)
    tampered_seq = seq // 2
    tampered = copy_db(simulated, bg.base / "tampered.db")
    execute(tampered, f"update event set comment = 'forged' where seq = {tampered_seq}")
    keep = seq - 5
    truncated = copy_db(simulated, bg.base / "truncated.db")
    execute(truncated, f"delete from event where seq > {keep}",
            f"update chain_head set seq = {keep}, "
            f"hash = (select hash from event where seq = {keep})")
    export_file = bg.base / "export.csv"
    commands = {
        "verify": (simulated, ("audit", "verify")),
        "export": (simulated, ("audit", "export", "--period", "2010", "--format", "csv",
                               "-o", str(export_file))),
        "tampered": (tampered, ("audit", "verify")),
        "truncated": (truncated, ("audit", "verify")),
        "truncated with head": (truncated, ("audit", "verify", "--head", head_hash)),
    }
    runs = dict(bg.pool.map(lambda item: (item[0], pledgeflow(sqlite_url(item[1][0]),
                                                              *item[1][1])), commands.items()))
    return {"runs": runs, "head": (seq, head_hash), "tampered seq": tampered_seq, "keep": keep,
            "export file": export_file}


# --- schema ----------------------------------------------------------------------------------


def test_db_upgrade_on_an_empty_file_prints_the_revision(campaign: dict[str, Run]) -> None:
    run = ok(campaign["upgrade"])
    assert run.out.strip() == f"database at revision {HEAD_REVISION}"


def test_db_downgrade_to_base_then_upgrade_again(bg: Background) -> None:
    result = bg.result("roundtrip")
    assert ok(result["down"]).out.strip() == "database at revision base"
    assert result["tables down"] <= {"alembic_version"}
    assert ok(result["up"]).out.strip() == f"database at revision {HEAD_REVISION}"
    assert {"event", "chain_head", "case", "ballot_count", "period"} <= result["tables up"]


# --- seed and periods ------------------------------------------------------------------------


def test_seed_loads_the_notice_once(campaign: dict[str, Run]) -> None:
    first = ok(campaign["seed"]).out
    assert first.startswith("seeded: ") and "periods:" in first and "organizations:" in first
    assert "nothing new" not in first
    assert ok(campaign["seed again"]).out.strip() == "seeded: nothing new (already seeded)"


def test_seed_demo_adds_people_and_accounts(campaign: dict[str, Run], simulated: Path) -> None:
    out = ok(campaign["seed demo"]).out
    assert "people:" in out and "accounts:" in out
    accounts = int(re.search(r"accounts: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert accounts > 0
    assert query(simulated, "select count(*) from account") == [(accounts,)]


def test_period_open_creates_a_case_for_every_subject(campaign: dict[str, Run],
                                                      simulated: Path) -> None:
    out = ok(campaign["period open"]).out
    match = re.fullmatch(r"period 2010 open; (\d+) new cases", out.strip())
    assert match, out
    opened = int(match.group(1))
    assert opened > 100
    assert query(simulated, "select count(*), count(distinct subject_key) from \"case\" "
                 "where period_id = (select id from period where code = '2010')") == \
        [(opened, opened)]


def test_simulate_plays_the_period_verifies_and_rolls_over(campaign: dict[str, Run],
                                                           simulated: Path) -> None:
    out = campaign["simulate"].out
    assert "  audit verify: OK" in out.splitlines()
    rollover = re.search(r"^  rollover: 2010 closed \((\d+) lapsed\); (\S+) opened with (\d+) "
                         r"cases$", out, re.MULTILINE)
    assert rollover, out
    assert int(rollover.group(3)) > 0
    assert query(simulated, "select status from period where code = ?", rollover.group(2)) == \
        [("open",)]
    assert query(simulated, "select status from period where code = '2010'") == [("closed",)]


# --- audit -----------------------------------------------------------------------------------


def test_audit_verify_prints_ok_with_the_head(audits: dict[str, Any], simulated: Path) -> None:
    run = ok(audits["runs"]["verify"])
    seq, head_hash = audits["head"]
    assert run.out.strip() == f"OK: {seq} events, head {head_hash}"
    assert query(simulated, "select count(*), max(seq) from event") == [(seq, seq)]


def test_audit_verify_names_the_tampered_event(audits: dict[str, Any]) -> None:
    run = audits["runs"]["tampered"]
    assert run.code != 0, str(run)
    assert "Traceback" not in run.out + run.err
    assert run.err.startswith(f"error: history broken at event {audits['tampered seq']}: "), \
        str(run)
    assert "OK" not in run.out


def test_audit_verify_catches_truncation_only_with_the_exported_head(
        audits: dict[str, Any]) -> None:
    alone = ok(audits["runs"]["truncated"])
    assert alone.out.startswith(f"OK: {audits['keep']} events")
    with_head = audits["runs"]["truncated with head"]
    assert with_head.code != 0, str(with_head)
    assert with_head.err.startswith(f"error: history broken at event {audits['keep']}: "
                                    "the exported head hash is not on the chain"), str(with_head)


def test_audit_export_writes_the_periods_events_and_the_head(audits: dict[str, Any],
                                                             simulated: Path) -> None:
    run = ok(audits["runs"]["export"])
    header, *rows, last = list(csv.reader(audits["export file"].open(encoding="utf-8",
                                                                     newline="")))
    seq, head_hash = audits["head"]
    assert last == ["#head", str(seq), head_hash, str(len(rows))]
    assert header == [*HASHED_FIELDS, "hash"]
    period_events = query(simulated, "select seq from event where period_id = "
                                     "(select id from period where code = '2010') order by seq")
    assert [int(row[0]) for row in rows] == [s for (s,) in period_events]
    assert len(rows) > 1000
    for row in rows:
        fields: dict[str, Any] = {k: v or None for k, v in zip(header, row, strict=True)}
        for k in ("seq", "case_id", "period_id", "actor_person_id"):
            fields[k] = int(fields[k]) if fields[k] is not None else None
        fields["payload"] = json.loads(row[header.index("payload")])
        body = json.dumps({k: fields[k] for k in HASHED_FIELDS}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(body.encode()).hexdigest() == fields["hash"], row
    assert run.err.strip() == f"exported {len(rows)} events of period 2010; head {head_hash}"


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_input_gets_a_readable_error_and_changes_nothing(bg: Background, name: str) -> None:
    result = bg.result("refusals")
    run = result["runs"][name]
    message = REFUSALS[name][1]
    assert run.code != 0, str(run)
    assert "Traceback" not in run.out + run.err, str(run)
    assert run.out == ""
    first, *more = run.err.rstrip("\n").splitlines()
    assert first.startswith(f"error: {message}"), str(run)
    if name == "not ended":  # a refusal lists every reason, one per line
        assert more and all(line.startswith("  - ") for line in more), str(run)
        assert any("runs until" in line and "[period_not_ended]" in line for line in more)
    else:
        assert more == [], str(run)
    if name == "unknown period":
        assert "known periods: 2010" in first
    assert result["after"] == result["before"]
    assert result["before"][0][1] == "open"


# --- PostgreSQL ------------------------------------------------------------------------------


def test_the_commands_work_on_postgresql(bg: Background) -> None:
    require_backend("postgresql")
    result = bg.result("postgresql")
    runs = result["runs"]
    assert ok(runs["upgrade"]).out.strip() == f"database at revision {HEAD_REVISION}"
    assert ok(runs["seed"]).out.startswith("seeded: ")
    opened = re.fullmatch(r"period 2010 open; (\d+) new cases", ok(runs["period open"]).out.strip())
    assert opened and int(opened.group(1)) > 0
    events = int(opened.group(1)) + 1  # one per new case, and the period's own
    verify = ok(runs["verify"]).out.strip()
    match = re.fullmatch(rf"OK: {events} events, head ([0-9a-f]{{64}})", verify)
    assert match, verify
    engine = sa.create_engine(result["url"])
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select seq, hash from chain_head")).one() == \
                (events, match.group(1))
    finally:
        engine.dispose()
