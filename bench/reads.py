"""Reads with 1,000,000 events stored: the inbox and a case timeline over HTTP, p50/p99 and
req/s at a few concurrency levels, beside baselines measured in the same run.

    .venv/bin/python -m bench.reads [--events 1000000] [--cases 2400] [--duration 5]

The service runs as ``pledgeflow serve`` (uvicorn, uvloop + httptools, 2 workers) on PostgreSQL
at 127.0.0.1:5432; ``wrk`` (Debian package) sends GETs with a bearer token on loopback.
Baselines: ``GET /healthz`` through the same server (what the framework costs), and each
endpoint's SQL run directly with psycopg on one connection (what the query costs).

Fixture, stated plainly: ``bench.decisions.prepare`` builds the seed's eight committees with a
secretary each and ``--cases`` branch cases in pledge/submitted (so each secretary's inbox holds
``cases / 8`` tasks). The events beyond those the engine wrote are *generated* set-based: one
case gets ``--long`` events, the rest are spread at random over all cases; each row's hash is
``service.history.event_hash`` over the previous one, loaded with COPY, and the chain head is
moved to the last one, so ``pledgeflow audit verify`` passes (``--verify`` checks it here).
Every superior also gets one sent ``pledge_submitted`` notification per case.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psycopg
import sqlalchemy as sa

from bench import decisions
from bench.decisions import Result, parse_wrk

DB_NAME = "pledgeflow_bench_reads"
TIMELINE_SQL = ("SELECT seq, case_id, period_id, stage, from_status, to_status, action, "
                "actor_person_id, actor_flow, occurred_at, comment, payload, prev_hash, hash "
                "FROM event WHERE case_id = %s AND seq > %s ORDER BY seq LIMIT 101")
# The inbox's main statement for a committee secretary, hand-written: open cases of the units
# directly below the organizations they lead (the service adds visibility and state filters).
INBOX_SQL = ('SELECT c.* FROM "case" c WHERE c.stage <> \'closed\' AND c.organization_id IN '
             "(SELECT o.id FROM organization o WHERE o.parent_id IN (SELECT organization_id "
             "FROM position WHERE person_id = %s AND role = 'secretary')) ORDER BY c.id")
COPY_COLUMNS = ("seq", "case_id", "period_id", "stage", "from_status", "to_status", "action",
                "actor_person_id", "actor_flow", "occurred_at", "comment", "payload",
                "prev_hash", "hash")


def _conninfo(url: str) -> str:
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
        hide_password=False)


def add_events(url: str, total: int, long_case: int, long_events: int) -> int:
    """Extend the hash chain to ``total`` events with COPY; returns the rows added."""
    from service.history import event_hash

    with psycopg.connect(_conninfo(url)) as conn:
        seq, prev = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
        cases = conn.execute('SELECT id, period_id FROM "case" ORDER BY id').fetchall()
        period_of = dict(cases)
        extra = max(0, total - seq)
        rng = random.Random(7)
        ids = [c for c, _ in cases]
        step = max(1, extra // max(1, long_events))  # every step-th event is the long case's
        start = datetime(2010, 9, 2, tzinfo=UTC)
        actions = ("record_fulfilment", "record_ad_hoc_review", "link_issued", "link_opened")
        with conn.cursor() as cur, cur.copy(
                f"COPY event ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
            for n in range(extra):
                seq += 1
                case_id = long_case if n % step == 0 else rng.choice(ids)
                fields = {
                    "seq": seq, "case_id": case_id, "period_id": period_of[case_id],
                    "stage": "pledge", "from_status": "submitted", "to_status": "submitted",
                    "action": actions[n % len(actions)], "actor_person_id": None,
                    "actor_flow": "bench", "occurred_at": start + timedelta(seconds=n),
                    "comment": f"履诺记录 {n}", "payload": {"n": n}, "prev_hash": prev}
                fields["hash"] = prev = event_hash(fields)
                copy.write_row([fields[k] if k != "payload" else f'{{"n":{n}}}'
                                for k in COPY_COLUMNS])
        conn.execute("UPDATE chain_head SET seq = %s, hash = %s WHERE id = 1", (seq, prev))
        conn.commit()
    return extra


def add_notifications(url: str) -> None:
    """One sent ``pledge_submitted`` email per case to its committee's secretary."""
    with psycopg.connect(_conninfo(url)) as conn:
        conn.execute(
            "INSERT INTO notification (recipient_person_id, recipient_email, lang, template, "
            "context, case_id, case_version, status, attempts, next_attempt_at, message_id, "
            "created_at, sent_at) "
            "SELECT p.id, p.email, 'zh', 'pledge_submitted', '{}', c.id, 4, 'sent', 1, now(), "
            "'<bench-' || c.id || '@example.org>', now(), now() "
            'FROM "case" c JOIN organization o ON o.id = c.organization_id '
            "JOIN position s ON s.organization_id = o.parent_id AND s.role = 'secretary' "
            "JOIN person p ON p.id = s.person_id")
        conn.commit()


def run_get(port: int, path: str, token: str | None, clients: int, duration: int) -> Result:
    """wrk GETs of one path at ``clients`` connections."""
    header = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{duration}s", "--latency", *header,
         f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out, clients)


def warm_up(port: int, path: str, token: str | None) -> None:
    """A few GETs before measuring (fills caches and connection pools)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as c:
        for _ in range(20):
            c.get(path).raise_for_status()


def time_sql(url: str, sql: str, params: tuple, n: int = 400) -> tuple[float, float]:
    """p50 and p99 (ms) of one statement run ``n`` times on one psycopg connection."""
    with psycopg.connect(_conninfo(url)) as conn:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            conn.execute(sql, params, prepare=True).fetchall()
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.99 * (len(times) - 1))]


def main() -> None:
    """Prepare the database, run the loads and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--cases", type=int, default=2400)
    parser.add_argument("--long", type=int, default=5000, help="events of the long case")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--verify", action="store_true", help="walk the chain afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    decisions.DB_NAME = DB_NAME  # prepare() builds its database under this name
    t0 = time.perf_counter()
    url, pairs, tokens = decisions.prepare(args.cases)
    long_case = pairs[0][0]
    added = add_events(url, args.events, long_case, args.long)
    add_notifications(url)
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        n_events, n_long = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE case_id = %s) FROM event",
            (long_case,)).fetchone()
        mid = conn.execute("SELECT seq FROM event WHERE case_id = %s ORDER BY seq "
                           "OFFSET %s LIMIT 1", (long_case, n_long // 2)).fetchone()[0]
        boss = conn.execute("SELECT person_id FROM account WHERE username = 'boss0'"
                            ).fetchone()[0]
    print(f"prepared {len(pairs)} cases, {n_events} events ({added} generated by COPY), "
          f"long case {long_case} with {n_long} events, in {time.perf_counter() - t0:.1f} s")
    if args.verify:
        from service.db import make_engine, make_session_factory
        from service.history import verify

        engine = make_engine(url)
        with make_session_factory(engine)() as s:
            print(f"audit verify: {verify(s) or 'intact'}")
        engine.dispose()

    paths = {"healthz (baseline)": ("/healthz", None),
             "inbox": ("/api/v1/inbox", tokens[0]),
             "timeline first page": (f"/api/v1/cases/{long_case}/events", tokens[0]),
             "timeline mid page": (f"/api/v1/cases/{long_case}/events?after={mid}", tokens[0])}
    proc, port = decisions.serve(url, args.workers)
    results: dict[str, list[Result]] = {}
    try:
        for name, (path, token) in paths.items():
            warm_up(port, path, token)
            results[name] = [run_get(port, path, token, c, args.duration) for c in levels]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    sql = {"inbox": time_sql(url, INBOX_SQL, (boss,)),
           "timeline first page": time_sql(url, TIMELINE_SQL, (long_case, 0)),
           "timeline mid page": time_sql(url, TIMELINE_SQL, (long_case, mid))}
    load = os.getloadavg()
    print(f"\nReads over HTTP (uvicorn {args.workers} workers, uvloop + httptools, PostgreSQL "
          f"127.0.0.1), {n_events} events; load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'endpoint':<22} {'clients':>7} | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'non-2xx':>7} | {'SQL p50':>7} {'SQL p99':>7}")
    for name, rows in results.items():
        base = sql.get(name)
        for r in rows:
            tail = f"{base[0]:>7.2f} {base[1]:>7.2f}" if base else f"{'-':>7} {'-':>7}"
            print(f"{name:<22} {r.clients:>7} | {r.rps:>7.0f} {r.p50_ms:>7.1f} "
                  f"{r.p99_ms:>7.1f} {r.errors:>7} | {tail}")
    worst = max(r.p99_ms for name, rows in results.items() if name != "healthz (baseline)"
                for r in rows if r.clients <= 8)
    print(f"\ntarget: inbox and timeline p99 <= 30 ms (up to 8 clients) -> worst {worst:.1f} ms:"
          f" {'MET' if worst <= 30 else 'NOT MET'}")
    if not args.keep:
        admin = sa.create_engine(decisions.ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
