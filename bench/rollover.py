"""Period rollover of 10,000 units and 200,000 members (210,000 cases) through the flow, beside
a plain COPY of the same rows, in one run.

    .venv/bin/python -m bench.rollover [--units 10000] [--members 200000] [--keep]

Measured: the real Prefect flow ``flows.rollover.roll_over_period("2010")``, run in this
process against an ephemeral Prefect server (``prefect_test_harness``, started before the
clock runs), calling ``pledgeflow serve`` (uvicorn, 1 worker, uvloop + httptools, dispatcher
off) on PostgreSQL at 127.0.0.1:5432 over HTTP with a flow's service token, as in production.
The service lapses every unfinished case of period 1 (one event each, history kept), closes
it, opens period 2 with a case and an ``open_case`` event per subject, carries unfinished
pledge items over and queues the "period opened" emails, in one transaction. The service runs
on the system clock, which is long past the seed's period 1 (2010).

Breakdown: the flow's wall time against the HTTP requests it made (their sum is the service's
work, the rest is Prefect's), then the same rollover again *in process* on a copy of the
database taken before the flow ran (``CREATE DATABASE … TEMPLATE``), with the product's
functions timed by wrapping them here and every SQL statement timed by SQLAlchemy's cursor
events, grouped by the innermost timed phase. A second flow run checks that rolling over
again changes nothing.

Baseline, same run: a plain psycopg ``COPY … FROM STDIN`` of exactly the rows the rollover
inserted (the new cases and all its events; then also its notifications, pledges and items)
into empty scratch tables made ``LIKE`` the real ones (indexes and constraints included, no
foreign keys). Also printed: the same COPY into the real tables of the pre-rollover copy
(foreign keys checked, indexes already holding period 1), rolled back — the floor for writing
these rows into this schema, without the lapse's UPDATE.

Fixture, generated and stated plainly: ``seed`` (the office, the eight committees, three
periods, the criteria); ``--units`` active units in all: the 8 committees, 24 general branches
under each (192) and the rest as branches spread evenly under those; ``--members`` Party
members spread round-robin over every unit, each with a unique e-mail, the first member of
each unit its secretary. Loaded set-based (psycopg COPY and ``INSERT … SELECT``). Period 1
(2010) is opened by the product's ``open_period`` (its cases, events and emails). Then, as a
shortcut written straight in SQL (bypassing the engine, like ``bench.decisions``), the cases
are put in a spread of states by ``id % 20``: 0–1 ``pledge/drafting`` with a pledge of three
items (pending, in progress, kept — so 10% of cases carry two items over); 2–3
``pledge/submitted``, 4 ``pledge/under_notice`` with an open public notice, 5–6
``review/open``, 7 ``evaluation/voting``, each with a pledge of two kept items; 8
``closed/not_commended`` (finished: it does not lapse); the rest ``pledge/pending``.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa

from bench import decisions

DB_NAME = "pledgeflow_bench_rollover"
PHASES_DB = f"{DB_NAME}_phases"
PERIOD = "2010"
GENERAL_BRANCHES_PER_COMMITTEE = 24
# (table, primary-key column) of what a rollover inserts, for the counts and the COPY baseline.
WRITTEN = (("case", "id"), ("event", "seq"), ("notification", "id"), ("pledge", "id"),
           ("pledge_item", "id"))


def _conninfo(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def _admin(sql: str) -> None:
    admin = sa.create_engine(decisions.ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(sql))
    admin.dispose()


def _copy_rows(cur: psycopg.Cursor[Any], table: str, columns: tuple[str, ...],
               rows: list[tuple[Any, ...]]) -> None:
    with cur.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


# --- the fixture ---------------------------------------------------------------------------------

def _load_tree_and_people(url: str, units: int, members: int, now: datetime) -> None:
    """General branches and branches under the seed's committees, members, their secretaries."""
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM organization WHERE kind = 'committee' ORDER BY id")
        committees = [r[0] for r in cur.fetchall()]
        general = len(committees) * GENERAL_BRANCHES_PER_COMMITTEE
        branches = units - len(committees) - general
        if branches < general:
            raise SystemExit(f"--units must be at least {len(committees) + 2 * general}")
        _copy_rows(cur, "organization", ("code", "name_zh", "name_en", "kind", "parent_id",
                                         "path", "active", "created_at"),
                   [(f"g{c}-{i}", f"总支{c}-{i}", f"General branch {c}-{i}", "general_branch",
                     c, "", True, now)
                    for c in committees for i in range(GENERAL_BRANCHES_PER_COMMITTEE)])
        cur.execute("SELECT id FROM organization WHERE kind = 'general_branch' ORDER BY id")
        parents = [r[0] for r in cur.fetchall()]
        _copy_rows(cur, "organization", ("code", "name_zh", "name_en", "kind", "parent_id",
                                         "path", "active", "created_at"),
                   [(f"b{n}", f"支部{n}", f"Branch {n}", "branch", parents[n % len(parents)],
                     "", True, now) for n in range(branches)])
        for kind in ("general_branch", "branch"):
            cur.execute("UPDATE organization o SET path = p.path || o.id || '/' FROM "
                        "organization p WHERE o.parent_id = p.id AND o.kind = %s", (kind,))
        cur.execute("SELECT id FROM organization WHERE kind <> 'campaign_office' ORDER BY id")
        unit_ids = [r[0] for r in cur.fetchall()]
        assert len(unit_ids) == units, (len(unit_ids), units)
        _copy_rows(cur, "person", ("name", "email", "organization_id", "is_party_member", "lang",
                                   "active", "created_at"),
                   [(f"党员{i}", f"m{i}@example.org", unit_ids[i % units], True,
                     "en" if i % 10 == 9 else "zh", True, now) for i in range(members)])
        cur.execute("INSERT INTO position (person_id, organization_id, role) "
                    "SELECT min(id), organization_id, 'secretary' FROM person "
                    "GROUP BY organization_id")
        conn.commit()


def _put_cases_in_states(url: str, period_id: int, criterion_id: int, now: datetime) -> None:
    """The fixture shortcut (module docstring): states, pledges, items and notices by SQL."""
    states = {(0, 1): ("pledge", "drafting"), (2, 3): ("pledge", "submitted"),
              (4,): ("pledge", "under_notice"), (5, 6): ("review", "open"),
              (7,): ("evaluation", "voting"), (8,): ("closed", "not_commended")}
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor() as cur:
        for buckets, (stage, status) in states.items():
            cur.execute('UPDATE "case" SET stage = %s, status = %s, version = 4 '
                        "WHERE period_id = %s AND id %% 20 = ANY(%s)",
                        (stage, status, period_id, list(buckets)))
        cur.execute("INSERT INTO pledge (case_id, summary) SELECT id, '' FROM \"case\" "
                    "WHERE period_id = %s AND id %% 20 <= 8", (period_id,))
        cur.execute(
            "INSERT INTO pledge_item (pledge_id, position, criterion_id, target, measures, "
            "assessment_standard, fulfilment) "
            "SELECT p.id, n, %s, 'target ' || c.id || '.' || n, '', '', "
            "CASE WHEN c.id %% 20 > 1 THEN 'kept' WHEN n = 0 THEN 'pending' "
            "WHEN n = 1 THEN 'in_progress' ELSE 'kept' END "
            "FROM pledge p JOIN \"case\" c ON c.id = p.case_id "
            "CROSS JOIN generate_series(0, 2) n "
            "WHERE c.period_id = %s AND (n < 2 OR c.id %% 20 <= 1)", (criterion_id, period_id))
        cur.execute("INSERT INTO public_notice (subject, case_id, starts_at, ends_at, status) "
                    "SELECT 'pledge', id, %s, %s + interval '7 days', 'open' FROM \"case\" "
                    "WHERE period_id = %s AND id %% 20 = 4", (now, now, period_id))
        conn.commit()


def prepare(units: int, members: int, db_name: str = DB_NAME) -> tuple[str, str]:
    """A fresh database with period 1 open and its cases spread over states: (url, token)."""
    from models import Criterion
    from service import migrate
    from service.accounts import create_token
    from service.clock import FixedClock, start_of_day
    from service.db import make_engine, make_session_factory
    from service.periods import get_period, open_period
    from service.seed import seed
    from service.workflow.roles import Actor

    _admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{db_name}"')
    url = decisions._url(db_name)
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    real_now = datetime.now(UTC)
    with factory() as s, s.begin():
        seed(s)
        token = create_token(s, name="bench-rollover", now=real_now, flow_name="flows")[0]
    _load_tree_and_people(url, units, members, real_now)
    started = time.perf_counter()
    with factory() as s, s.begin():
        period = get_period(s, PERIOD, lock=True)
        opened = open_period(s, period, actor=Actor(flow="bench"),
                             clock=FixedClock(start_of_day(period.starts_on)))
        period_id, start = period.id, start_of_day(period.starts_on)
        criterion_id = s.scalar(sa.select(sa.func.min(Criterion.id)))
    print(f"  open_period({PERIOD}) for the fixture: {opened} cases in "
          f"{time.perf_counter() - started:.1f} s")
    assert opened == units + members, (opened, units, members)
    _put_cases_in_states(url, period_id, criterion_id, start)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))  # fresh statistics after the bulk load
    engine.dispose()
    return url, token


def counts(url: str) -> dict[str, Any]:
    """What a rollover changes: row counts and top keys, period states, lapsed cases."""
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor() as cur:
        out: dict[str, Any] = {}
        for table, key in WRITTEN:
            cur.execute(f'SELECT count(*), coalesce(max({key}), 0) FROM "{table}"')
            out[table] = cur.fetchone()
        cur.execute("SELECT code, status FROM period ORDER BY sequence")
        out["periods"] = cur.fetchall()
        cur.execute("SELECT count(*) FILTER (WHERE c.status = 'lapsed'), "
                    "count(*) FILTER (WHERE c.stage <> 'closed') FROM \"case\" c "
                    "JOIN period p ON p.id = c.period_id WHERE p.code = %s", (PERIOD,))
        out["lapsed"], out["unfinished"] = cur.fetchone()
        cur.execute("SELECT seq, hash FROM chain_head")
        out["head"] = cur.fetchone()
        cur.execute("SELECT count(*) FROM public_notice WHERE status = 'open'")
        out["open_notices"] = cur.fetchone()[0]
        return out


# --- the flow ------------------------------------------------------------------------------------

class TimedTransport(httpx.BaseTransport):
    """The real HTTP transport, recording how long each request took (method, path, s)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.calls: list[tuple[str, str, float]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = self.inner.handle_request(request)
        response.read()
        self.calls.append((request.method, request.url.path, time.perf_counter() - started))
        return response

    def close(self) -> None:
        self.inner.close()


@dataclass
class FlowRun:
    wall: float
    calls: list[tuple[str, str, float]]
    result: dict[str, Any]

    @property
    def http(self) -> float:
        return sum(t for _, _, t in self.calls)


def run_flow(port: int, token: str) -> FlowRun:
    """``roll_over_period(PERIOD)`` as Prefect runs it, against the service on ``port``."""
    from flows.client import override
    from flows.rollover import roll_over_period

    transport = TimedTransport()
    with override(base_url=f"http://127.0.0.1:{port}", token=token, transport=transport):
        started = time.perf_counter()
        result = roll_over_period(PERIOD)
        wall = time.perf_counter() - started
    return FlowRun(wall, transport.calls, result)


@contextmanager
def prefect_server() -> Iterator[float]:
    """An ephemeral Prefect server for the flow runs; yields how long it took to start."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    import flows.runtime  # noqa: F401  (the heartbeat off)

    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=60):
        yield time.perf_counter() - started


# --- the breakdown -------------------------------------------------------------------------------

@dataclass
class Phases:
    """Per phase (a product function, ``insert_rows`` per table): calls, inclusive and own
    wall time, SQL time seen by SQLAlchemy; SQL time per statement kind."""

    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    own: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sql: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    statements: dict[tuple[str, str], list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0.0]))
    stack: list[str] = field(default_factory=lambda: ["roll_over"])
    children: list[float] = field(default_factory=lambda: [0.0])


def _kind(statement: str) -> str:
    words = statement.split()
    upper = [w.upper() for w in words]
    target = next((words[i + 1].strip('"(') for i, w in enumerate(upper[:-1])
                   if w in ("FROM", "INTO", "UPDATE")), "")
    return f"{upper[0] if upper else '?'} {target}".strip()


def _timed(phases: Phases, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        label = name
        if name == "insert_rows":  # (session, insert, rows): one phase per table
            label = f"insert_rows {args[1].table.name}"
        phases.stack.append(label)
        phases.children.append(0.0)
        phases.calls[label] += 1
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            phases.stack.pop()
            nested = phases.children.pop()
            phases.wall[label] += spent
            phases.own[label] += spent - nested
            phases.children[-1] += spent
    return wrapper


def profile_in_process(url: str) -> tuple[float, float, Phases]:
    """The service's rollover in this process, product functions and SQL timed: (rollover s,
    commit s, phases)."""
    from notifications import outbox
    from service import history, periods
    from service.clock import SystemClock
    from service.db import make_engine, make_session_factory
    from service.workflow import engine as wf
    from service.workflow.roles import Actor

    phases = Phases()
    targets: list[tuple[Any, str]] = [
        (wf, "apply"), (wf, "lapse_cases"), (wf, "open_cases"), (wf, "_carry_over"),
        (history, "append_many"), (history, "append_bulk"), (history, "insert_rows"),
        (outbox, "enqueue"), (periods, "_tell_everyone"),
        (periods, "_finish_selections"), (periods, "subjects_for")]
    originals = [(module, name, getattr(module, name)) for module, name in targets
                 if hasattr(module, name)]
    for module, name, fn in originals:
        setattr(module, name, _timed(phases, name, fn))
    engine = make_engine(url)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any,
               executemany: bool) -> None:
        spent = time.perf_counter() - conn.info.pop("bench_started")
        phases.sql[phases.stack[-1]] += spent
        entry = phases.statements[(phases.stack[-1], _kind(statement))]
        entry[0] += len(params) if executemany and isinstance(params, list) else 1
        entry[1] += spent

    factory = make_session_factory(engine)
    try:
        with factory() as s:
            s.begin()
            started = time.perf_counter()
            periods.roll_over(s, PERIOD, actor=Actor(flow="flows"), clock=SystemClock())
            rolled = time.perf_counter() - started
            started = time.perf_counter()
            phases.stack.append("commit")
            s.commit()
            phases.stack.pop()
            committed = time.perf_counter() - started
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)
        engine.dispose()
    return rolled, committed, phases


def print_phases(rolled: float, committed: float, phases: Phases) -> None:
    print(f"\nIn process, same rollover on a copy: {rolled:.1f} s + commit {committed:.1f} s")
    print(f"  {'phase':<26} {'calls':>6} {'incl. s':>8} {'own s':>7} {'SQL s':>7}")
    for name in sorted(phases.wall, key=lambda n: -phases.own[n]):
        print(f"  {name:<26} {phases.calls[name]:>6} {phases.wall[name]:>8.2f} "
              f"{phases.own[name]:>7.2f} {phases.sql.get(name, 0.0):>7.2f}")
    print(f"  {'roll_over itself':<26} {'':>6} {rolled:>8.2f} "
          f"{rolled - phases.children[0]:>7.2f} {phases.sql.get('roll_over', 0.0):>7.2f}")
    print("  (own: minus nested phases; insert_rows runs the COPY and makes its rows as they "
          "stream, so\n   the event hashes are computed there; COPY is not seen by "
          "SQLAlchemy, hence no SQL s)")
    print(f"  SQL seen by SQLAlchemy {sum(phases.sql.values()):.1f} s; heaviest statements:")
    heavy = sorted(phases.statements.items(), key=lambda kv: -kv[1][1])[:8]
    for (phase, kind), (n, spent) in heavy:
        print(f"    {spent:>6.2f} s  {int(n):>7} rows/calls  {kind:<28} in {phase}")


# --- the baseline --------------------------------------------------------------------------------

def copy_baseline(url: str, before: dict[str, Any], into: str | None = None
                  ) -> tuple[list[tuple[str, int, float]], list[tuple[str, int, float]]]:
    """COPY the rows the rollover inserted into LIKE-made scratch tables, and (``into``: a
    copy of the database from before the rollover) into its real tables (foreign keys, full
    indexes) in one transaction rolled back: ([(table, rows, s)] for each)."""
    dumps: dict[str, bytes] = {}
    scratch_times = []
    with psycopg.connect(_conninfo(url)) as conn, conn.cursor() as cur:
        for table, key in WRITTEN:
            scratch = f"bench_copy_{table}"
            cur.execute(f'DROP TABLE IF EXISTS {scratch}; CREATE TABLE {scratch} '
                        f'(LIKE "{table}" INCLUDING ALL)')
            buffer = io.BytesIO()
            with cur.copy(f'COPY (SELECT * FROM "{table}" WHERE {key} > {int(before[table][1])}'
                          f' ORDER BY {key}) TO STDOUT') as copy:
                for chunk in copy:
                    buffer.write(chunk)
            conn.commit()
            dumps[table] = buffer.getvalue()
            started = time.perf_counter()
            rows = _copy_in(cur, scratch, dumps[table])
            conn.commit()
            scratch_times.append((table, rows, time.perf_counter() - started))
            cur.execute(f"DROP TABLE {scratch}")
            conn.commit()
    real_times = []
    if into is not None:
        with psycopg.connect(_conninfo(into)) as conn, conn.cursor() as cur:
            for table in ("case", "pledge", "pledge_item", "event", "notification"):
                started = time.perf_counter()
                rows = _copy_in(cur, f'"{table}"', dumps[table])
                real_times.append((table, rows, time.perf_counter() - started))
            conn.rollback()  # the in-process breakdown runs on this database next
    return scratch_times, real_times


def _copy_in(cur: psycopg.Cursor[Any], table: str, data: bytes) -> int:
    with cur.copy(f"COPY {table} FROM STDIN") as copy:
        for start in range(0, len(data), 1 << 20):
            copy.write(data[start:start + (1 << 20)])
    return cur.rowcount


# --- main ----------------------------------------------------------------------------------------

def _load() -> str:
    return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=10000)
    parser.add_argument("--members", type=int, default=200000)
    parser.add_argument("--target", type=float, default=60.0, help="seconds (issue 7: 60)")
    parser.add_argument("--no-phases", dest="phases", action="store_false",
                        help="skip the in-process breakdown on a copy of the database")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    args = parser.parse_args()
    print(f"preparing {args.units} units and {args.members} members ({_load()})")
    started = time.perf_counter()
    url, token = prepare(args.units, args.members)
    before = counts(url)
    print(f"prepared in {time.perf_counter() - started:.1f} s: {before['unfinished']} unfinished "
          f"cases of {args.units + args.members} in period {PERIOD}, "
          f"{before['open_notices']} open notices, chain at {before['head'][0]} events")
    if args.phases:
        _admin(f'DROP DATABASE IF EXISTS "{PHASES_DB}" WITH (FORCE)')
        _admin(f'CREATE DATABASE "{PHASES_DB}" TEMPLATE "{DB_NAME}"')
    proc, port = decisions.serve(url, 1)
    try:
        with prefect_server() as prefect_start:
            print(f"Prefect test server up in {prefect_start:.1f} s; service on port {port} "
                  f"({_load()})")
            first = run_flow(port, token)
            after = counts(url)
            again = run_flow(port, token)
            after_again = counts(url)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    report = first.result["periods"][0]
    written = {t: after[t][0] - before[t][0] for t, _ in WRITTEN}
    print(f"\nFlow roll_over_period({PERIOD!r}) through pledgeflow serve ({_load()}):")
    print(f"  result: closed {report.get('closed_period')}, lapsed {report.get('lapsed')}, "
          f"opened {report.get('opened_period')} with {report.get('cases_opened')} cases")
    print("  written: " + ", ".join(f"{n} {t}" for t, n in written.items()))
    print(f"  wall {first.wall:.1f} s = service {first.http:.1f} s over HTTP "
          f"({', '.join(f'{m} {p} {t:.2f} s' for m, p, t in first.calls)}) "
          f"+ flow overhead {first.wall - first.http:.2f} s")
    checks = {
        "every unfinished case lapsed": after["lapsed"] == before["unfinished"]
        and after["unfinished"] == 0 and report.get("lapsed") == before["unfinished"],
        "one case per subject opened": report.get("cases_opened") == args.units + args.members
        and written["case"] == args.units + args.members,
        "one event per lapse and per new case, plus close and open":
            written["event"] == before["unfinished"] + args.units + args.members + 2,
        "open notices withdrawn": after["open_notices"] == 0,
        "periods 2010 closed, 2011-h1 open":
            after["periods"][:2] == [(PERIOD, "closed"), ("2011-h1", "open")],
        "rolling over again changes nothing": after_again == after
        and again.result["periods"][0].get("lapsed") == 0,
    }
    for what, ok in checks.items():
        print(f"  {'ok ' if ok else 'BAD'} {what}")
    print(f"  again: wall {again.wall:.2f} s (service {again.http:.2f} s)")

    baseline, real = copy_baseline(url, before, decisions._url(PHASES_DB) if args.phases
                                   else None)
    core = sum(t for table, _, t in baseline if table in ("case", "event"))
    every = sum(t for _, _, t in baseline)
    print(f"\nBaseline, plain COPY into LIKE-made scratch tables ({_load()}):")
    for table, rows, spent in baseline:
        print(f"  {table:<13} {rows:>8} rows  {spent:>6.2f} s  ({rows / max(spent, 1e-9):,.0f}"
              " rows/s)")
    print(f"  cases + events {core:.1f} s; everything the rollover inserted {every:.1f} s")
    if real:
        print("  the same COPY into the real tables of the pre-rollover copy (foreign keys, "
              "full indexes; rolled back): " + ", ".join(f"{t} {s:.1f} s" for t, _, s in real)
              + f"; total {sum(s for _, _, s in real):.1f} s")
    print(f"\nratio: flow {first.wall:.1f} s / COPY of cases + events {core:.1f} s = "
          f"{first.wall / core:.1f}x; / COPY of everything {every:.1f} s = "
          f"{first.wall / every:.1f}x")
    ok = first.wall <= args.target and all(checks.values())
    print(f"target (issue 7): rollover of {args.units + args.members} cases through the flow "
          f"<= {args.target:.0f} s -> {first.wall:.1f} s: {'MET' if ok else 'NOT MET'}")

    if args.phases:
        print_phases(*profile_in_process(decisions._url(PHASES_DB)))
    if not args.keep:
        for name in (DB_NAME, PHASES_DB):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
