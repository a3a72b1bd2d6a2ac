"""Decisions over HTTP: sustained approvals/s and p50/p99 latency at 1, 8 and 32 clients,
beside pgbench running the same SQL statements (the database's own limit), in one run.

    uv run python -m bench.decisions [--cases 30000] [--duration 10] [--clients 1,8,32]

Beside each level's figures: the CPU each decision costs, in the service's processes and in
the PostgreSQL backends of the benchmark's database (/proc), and so what two cores can carry.

Each request is a superior approving a submitted pledge with a bearer token: sign-in check,
visibility, the choke point (lock, roles, guards), the event on the hash chain, the outbox row,
commit. The service runs as ``pledgeflow serve`` (uvicorn, uvloop + httptools, N workers) on
PostgreSQL at 127.0.0.1:5432; the load comes from ``wrk`` (Debian package) on loopback.

Fixture shortcut, stated plainly: the cases are *put* into pledge/submitted with set-based SQL
(creating 30,000 submitted pledges through the engine would take minutes and is not what is
measured). Every measured approval goes through the real engine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("PLEDGEFLOW_BENCH_PG_ADMIN",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DB_NAME = "pledgeflow_bench_decisions"


@dataclass
class Result:
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    service_ms: float | None = None  # CPU per request: the service's processes
    db_ms: float | None = None  # CPU per request: the PostgreSQL backends of its database


def _url(name: str) -> str:
    return sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def load_submitted(s: Session, cases: int, *, now: datetime, flow: str
                   ) -> tuple[list[tuple[int, int]], dict[int, str]]:
    """Seed, give each committee a secretary with a bearer token, and add ``cases`` branches
    (a clerk each) whose cases are put straight into pledge/submitted (the fixture shortcut of
    the module docstring). Returns ([(case id, committee id)] by case id, {committee id: its
    secretary's token} in committee order). Also the fault tests' fixture."""
    from models import Account, Case, Organization, Period, Person, Pledge, Position
    from service.accounts import create_token
    from service.clock import FixedClock, start_of_day
    from service.seed import seed
    from service.workflow import engine as wf
    from service.workflow.roles import Actor

    seed(s)
    committees = s.scalars(sa.select(Organization).where(
        Organization.kind == "committee").order_by(Organization.id)).all()
    period = s.scalars(sa.select(Period).where(Period.code == "2010")).one()
    token_of: dict[int, str] = {}
    per = cases // len(committees) + 1
    for n, committee in enumerate(committees):
        boss = Person(name=f"书记{n}", email=f"boss{n}@example.org", organization_id=committee.id)
        s.add(boss)
        s.flush()
        s.add(Position(person_id=boss.id, organization_id=committee.id, role="secretary"))
        account = Account(person_id=boss.id, username=f"boss{n}", password_hash="x")
        s.add(account)
        s.flush()
        token_of[committee.id] = create_token(s, name=flow, now=now, account_id=account.id)[0]
        s.execute(sa.insert(Organization), [
            {"code": f"b{n}-{i}", "name_zh": f"支部{n}-{i}", "name_en": f"Branch {n}-{i}",
             "kind": "branch", "parent_id": committee.id, "path": "", "active": True,
             "created_at": now} for i in range(per)])
    s.execute(sa.text("UPDATE organization o SET path = p.path || o.id || '/' FROM "
                      "organization p WHERE o.parent_id = p.id AND o.kind = 'branch'"))
    branches = s.execute(sa.select(Organization.id).where(
        Organization.kind == "branch").order_by(Organization.id).limit(cases)).scalars().all()
    s.execute(sa.insert(Person), [
        {"name": f"秘书{b}", "email": f"clerk{b}@example.org", "organization_id": b,
         "is_party_member": True, "lang": "zh", "active": True, "created_at": now}
        for b in branches])
    clerks = dict(s.execute(sa.select(Person.organization_id, Person.id).where(
        Person.email.like("clerk%"))).all())
    s.execute(sa.insert(Position), [{"person_id": clerks[b], "organization_id": b,
                                     "role": "clerk"} for b in branches])
    wf.open_cases(s, period=period, subjects=[wf.Subject("organization", b) for b in branches],
                  actor=Actor(flow=flow), clock=FixedClock(start_of_day(period.starts_on)))
    s.execute(sa.text("UPDATE \"case\" SET status = 'submitted', version = 4"))
    rows = s.execute(sa.select(Case.id, Case.organization_id, Organization.parent_id)
                     .join(Organization, Organization.id == Case.organization_id)
                     .order_by(Case.id)).all()
    s.execute(sa.insert(Pledge), [
        {"case_id": case_id, "summary": "", "submitted_by_id": clerks[org], "submitted_at": now}
        for case_id, org, _ in rows])
    return [(case_id, parent) for case_id, _, parent in rows], token_of


def prepare(cases: int) -> tuple[str, list[tuple[int, int]], list[str]]:
    """A fresh database with ``cases`` submitted pledges: (url, [(case, token no.)], tokens)."""
    from service import migrate
    from service.db import make_engine, make_session_factory

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    url = _url(DB_NAME)
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as s, s.begin():
        case_rows, token_of = load_submitted(s, cases, now=datetime(2010, 9, 1, tzinfo=UTC),
                                             flow="bench")
    committee_index = {committee_id: i for i, committee_id in enumerate(token_of)}
    pairs = [(case_id, committee_index[parent]) for case_id, parent in case_rows]
    tokens = list(token_of.values())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE"))  # fresh statistics after the bulk load
    engine.dispose()
    return url, pairs, tokens


def wrk_script(pairs: list[tuple[int, int]], tokens: list[str], path: Path) -> None:
    """A wrk Lua script posting approvals, each request to the next unused case."""
    ids = ",".join(str(c) for c, _ in pairs)
    toks = ",".join(str(t + 1) for _, t in pairs)
    path.write_text(f"""
local ids = {{{ids}}}
local tok = {{{toks}}}
local tokens = {{{",".join(json.dumps(t) for t in tokens)}}}
local counter = 0
local stride, offset = 1, 0
function setup(thread) end
function init(args) offset = tonumber(args[1] or 0); stride = tonumber(args[2] or 1) end
request = function()
  counter = counter + 1
  local i = offset + (counter - 1) * stride + 1
  if i > #ids then i = #ids end
  return wrk.format("POST", "/api/v1/cases/" .. ids[i] .. "/pledge/approve",
    {{["Authorization"] = "Bearer " .. tokens[tok[i]], ["Content-Type"] = "application/json"}},
    "{{}}")
end
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {**os.environ, "PLEDGEFLOW_DATABASE_URL": url, "PLEDGEFLOW_DISPATCHER": "false",
           "PLEDGEFLOW_DB_POOL_SIZE": "20"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "pledgeflow"), "serve",
                             "--port", str(port), "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not start within 60 s")


def _ms(text: str) -> float:
    """wrk's latency text (``850.00us``, ``3.21ms``, ``1.02s``, ``1.50m``) in milliseconds."""
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(out: str, clients: int) -> Result:
    """wrk's ``--latency`` report as a Result."""
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk gave no latency distribution:\n{out}")

    def find(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise RuntimeError(f"wrk's report has no {pattern!r}:\n{out}")
        return match.group(1)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # Anchored at the line's start: "72.50%" in the thread stats would match a bare "50%".
    return Result(clients, float(find(r"Requests/sec:\s+([\d.]+)")),
                  _ms(find(r"^\s+50%\s+(\S+)")), _ms(find(r"^\s+99%\s+(\S+)")),
                  int(errors.group(1)) if errors else 0, int(find(r"(\d+) requests in")))


def cpu_seconds(*, pgid: int | None = None, database: str | None = None) -> float:
    """CPU seconds (user + system) so far of the processes in a process group, or of the
    PostgreSQL backends connected to a database (their command line names it), from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if pgid is not None and int(stat[2]) != pgid:
                continue
            if database is not None and f" {database} " not in (
                    entry / "cmdline").read_text().replace("\0", " "):
                continue
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        total += int(stat[11]) + int(stat[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, script: Path, clients: int, duration: int, offset: int, *,
            service_pgid: int | None = None) -> Result:
    """One wrk run; with ``service_pgid``, also the CPU per request of the service's process
    group and of the PostgreSQL backends of the benchmark's database."""
    before = (cpu_seconds(pgid=service_pgid), cpu_seconds(database=DB_NAME)) \
        if service_pgid else None
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{duration}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}", "--", str(offset), "1"],
        capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out, clients)
    if before is not None and result.requests:
        result.service_ms = 1000 * (cpu_seconds(pgid=service_pgid) - before[0]) / result.requests
        result.db_ms = 1000 * (cpu_seconds(database=DB_NAME) - before[1]) / result.requests
    return result


PGBENCH_SQL = """\\set id random(1, {n})
BEGIN;
SELECT id, stage, status, version FROM pgb_case WHERE id = :id FOR UPDATE;
UPDATE pgb_case SET status = 'approved', version = version + 1 WHERE id = :id;
SELECT seq, hash FROM pgb_head WHERE id = 1 FOR UPDATE;
INSERT INTO pgb_event (case_id, action, occurred_at, payload, prev_hash, hash)
  VALUES (:id, 'approve', now(), '{{}}', md5(random()::text), md5(random()::text));
UPDATE pgb_head SET seq = seq + 1, hash = md5(random()::text) WHERE id = 1;
INSERT INTO pgb_notification (case_id, template, context) VALUES (:id, 'pledge_approved', '{{}}');
END;
"""


def run_pgbench(clients: int, duration: int, n: int) -> Result:
    """The same statements in plain SQL: the database's own ceiling on this machine."""
    url = sa.engine.make_url(_url(DB_NAME))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in (
            "DROP TABLE IF EXISTS pgb_case, pgb_head, pgb_event, pgb_notification",
            "CREATE TABLE pgb_case (id int primary key, stage text, status text, version int)",
            f"INSERT INTO pgb_case SELECT g, 'pledge', 'submitted', 4 "
            f"FROM generate_series(1, {int(n)}) g",
            "CREATE TABLE pgb_head (id int primary key, seq bigint, hash text)",
            "INSERT INTO pgb_head VALUES (1, 0, '')",
            "CREATE TABLE pgb_event (seq bigserial primary key, case_id int, action text, "
            "occurred_at timestamptz, payload jsonb, prev_hash text unique, hash text unique)",
            "CREATE TABLE pgb_notification (id bigserial primary key, case_id int, "
            "template text, context jsonb)",
        ):
            conn.execute(sa.text(statement))
    engine.dispose()
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(PGBENCH_SQL.format(n=n))
    out = subprocess.run(
        ["pgbench", "-n", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
         "-U", url.username or "postgres", "-c", str(clients), "-j", str(min(clients, 2)),
         "-T", str(duration), "-f", f.name, "-r", "--log", "--log-prefix",
         f"{tempfile.gettempdir()}/pgb", url.database or DB_NAME],
        capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latencies: list[float] = []
    for log in Path(tempfile.gettempdir()).glob("pgb.*"):
        latencies += [int(line.split()[2]) / 1000 for line in log.read_text().splitlines()]
        log.unlink()
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) \
        if latencies else (lambda q: 0.0)
    return Result(clients, tps, pick(0.5), pick(0.99), 0, len(latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=30000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            package = "wrk" if tool == "wrk" else "postgresql-client"
            sys.exit(f"{tool} is needed: apt-get install {package}")
    levels = [int(c) for c in args.clients.split(",")]
    started = time.perf_counter()
    url, pairs, tokens = prepare(args.cases)
    print(f"prepared {len(pairs)} submitted pledges in {time.perf_counter() - started:.1f} s")
    script = Path(tempfile.gettempdir()) / "pledgeflow_approve.lua"
    wrk_script(pairs, tokens, script)
    proc, port = serve(url, args.workers)
    results: list[Result] = []
    try:
        subprocess.run(["wrk", "-t1", "-c2", "-d2s", "-s", str(script),
                        f"http://127.0.0.1:{port}", "--", str(len(pairs) - 200), "1"],
                       capture_output=True, check=True)  # warm-up on cases at the end
        offset = 0
        for clients in levels:
            result = run_wrk(port, script, clients, args.duration, offset,
                             service_pgid=proc.pid)
            offset += result.requests + 10
            results.append(result)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    baseline = [run_pgbench(c, args.duration, len(pairs)) for c in levels]
    print(f"\nDecisions over HTTP (uvicorn {args.workers} workers, uvloop + httptools, "
          "PostgreSQL 127.0.0.1) vs pgbench, same statements")
    print(f"{'clients':>7} | {'decisions/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
          f"{'CPU ms: service':>15} {'db':>5} | {'pgbench tx/s':>12} {'p50 ms':>7} "
          f"{'p99 ms':>7} | {'ratio':>5}")
    for r, b in zip(results, baseline, strict=True):
        print(f"{r.clients:>7} | {r.rps:>11.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
              f"{r.errors:>7} {r.service_ms or 0:>15.2f} {r.db_ms or 0:>5.2f} | "
              f"{b.rps:>12.0f} {b.p50_ms:>7.1f} {b.p99_ms:>7.1f} | {r.rps / b.rps:>5.2f}")
    target = next((r for r in results if r.clients == 8), None)
    if target is not None:
        print(f"\ntarget at 8 clients: >= 600 decisions/s and p99 <= 50 ms -> "
              f"{target.rps:.0f}/s, p99 {target.p99_ms:.1f} ms: "
              f"{'MET' if target.rps >= 600 and target.p99_ms <= 50 else 'NOT MET'}")
        if target.service_ms and target.db_ms:
            cores = os.cpu_count() or 1
            print(f"CPU per decision at 8 clients: service {target.service_ms:.2f} ms + "
                  f"PostgreSQL {target.db_ms:.2f} ms; {cores} cores carry at most "
                  f"{1000 * cores / (target.service_ms + target.db_ms):.0f} decisions/s")


if __name__ == "__main__":
    main()
