"""Outbox to SMTP: emails/s the real dispatcher delivers to a local SMTP server, beside a bare
aiosmtplib sender to the same server with the same number of connections, in one run.

    uv run python -m bench.outbox_smtp [--emails 5000] [--connections 4] [--no-sqlite]

The server is aiosmtpd (uvloop) in its own process, so it shares no GIL with the sender; it
counts what it receives and any Message-ID it sees twice. The dispatcher
(``notifications.dispatcher.Dispatcher``, its default batch) drains N pending notifications from
PostgreSQL (database ``pledgeflow_bench_outbox``), then from SQLite: half ``pledge_submitted``
(two action links each), half ``ballot_invitation`` (one), two thirds in Chinese, a third in
English. Everything it does per email is measured: claim, obsolescence check, links minted (with
their history events), render, send, record.

Fixture shortcut, stated plainly: the cases are *put* into pledge/submitted and
evaluation/voting, and the notification rows inserted, with set-based SQL before the clock
starts. The baseline sends the same number of messages of the same templates, rendered and
written to bytes (``notifications.mime``, as the dispatcher writes them) before its clock
starts, with ``SMTP.sendmail``: all that is left inside its clock is the SMTP dialogue. A second
baseline sends the same emails as ``EmailMessage`` objects with aiosmtplib's ``send_message``
(which flattens each inside its clock), as the dispatcher itself sent them until it wrote bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.decisions import ADMIN_URL, _free_port, _url
from notifications.mime import Outgoing

HOST = "127.0.0.1"
DB_NAME = "pledgeflow_bench_outbox"
BASE_URL = "https://pledgeflow.example.org"
MAIL_FROM = "pledgeflow <noreply@pledgeflow.example.org>"
NOW = datetime(2010, 9, 20, 2, 0, tzinfo=UTC)
# (template, action, stage, status, case version, recipients per case, links per email):
# a submitted pledge tells the unit's two superiors, an evaluation round its ten evaluators;
# half the emails are of each kind.
MIX = (("pledge_submitted", "submit", "pledge", "submitted", 4, 2, 2),
       ("ballot_invitation", "open_evaluation", "evaluation", "voting", 9, 10, 1))


# --- the SMTP server, in its own process ---------------------------------------------------------

_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.MULTILINE | re.IGNORECASE)


class _CountingHandler:
    """Accept everything; count messages, bytes and Message-IDs seen more than once."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.received = self.duplicates = self.without_id = self.bytes = 0
        self.ids: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        self.received += 1
        self.bytes += len(data)
        match = _MESSAGE_ID.search(data, 0, data.find(b"\r\n\r\n"))
        if match is None:
            self.without_id += 1
        elif match.group(1) in self.ids:
            self.duplicates += 1
        else:
            self.ids.add(match.group(1))
        return "250 2.0.0 OK: queued"


def _serve(conn: Any, port: int) -> None:
    """The server process: aiosmtpd on uvloop; answers "stats" / "reset" / "stop" on a pipe."""
    import uvloop
    from aiosmtpd.controller import Controller

    handler = _CountingHandler()
    controller = Controller(handler, hostname=HOST, port=port, loop=uvloop.new_event_loop(),
                            ready_timeout=10.0)
    controller.start()
    conn.send("ready")
    while True:
        command = conn.recv()
        if command == "stats":
            conn.send({"received": handler.received, "unique": len(handler.ids),
                       "duplicates": handler.duplicates, "without_id": handler.without_id,
                       "bytes": handler.bytes, "cpu": time.process_time()})
        elif command == "reset":
            handler.reset()
            conn.send("ok")
        else:
            controller.stop()
            conn.send("stopped")
            return


class Server:
    """The counting SMTP server in a child process."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._conn, child = mp.Pipe()
        self._proc = mp.get_context("spawn").Process(target=_serve, args=(child, self.port),
                                                     daemon=True)
        self._proc.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            raise RuntimeError("the SMTP server did not start")

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def stop(self) -> None:
        self.ask("stop")
        self._proc.join(10)


# --- CPU accounting ------------------------------------------------------------------------------

def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / ticks, sum(fields) / ticks


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, 0 if it cannot be read."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One measured sender: how many, how long, and where the CPU went."""

    name: str
    emails: int = 0
    seconds: float = 0.0
    sender_cpu: float = 0.0
    server_cpu: float = 0.0
    db_cpu: float = 0.0
    machine_busy: float = 0.0
    avg_bytes: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.emails / self.seconds if self.seconds else 0.0


class _Meter:
    """Wall clock, this process's CPU, the server's CPU and the machine's busy time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        server.ask("reset")
        self.server_cpu = server.ask("stats")["cpu"]
        self.busy = _machine_cpu()
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def finish(self, run: Run) -> dict[str, Any]:
        run.seconds = time.perf_counter() - self.wall
        run.sender_cpu = time.process_time() - self.cpu
        busy, total = _machine_cpu()
        run.machine_busy = (busy - self.busy[0]) / max(total - self.busy[1], 1e-9)
        stats = self.server.ask("stats")
        run.server_cpu = stats["cpu"] - self.server_cpu
        run.avg_bytes = stats["bytes"] / max(stats["received"], 1)
        return stats


def _check_server(run: Run, stats: dict[str, Any], expected: int) -> None:
    run.checks.append(f"server received {stats['received']}/{expected}, "
                      f"{stats['duplicates']} duplicate Message-IDs, "
                      f"{stats['without_id']} without one")
    if stats["received"] != expected or stats["duplicates"] or stats["without_id"]:
        raise SystemExit(f"{run.name}: " + run.checks[-1])


# --- the fixture ---------------------------------------------------------------------------------

def create_postgres() -> str:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{DB_NAME}"'))
    admin.dispose()
    return _url(DB_NAME)


RECIPIENTS = 200  # people emailed; every third reads English


def plan(emails: int) -> list[tuple[int, list[int]]]:
    """The cases to email about: (kind in ``MIX``, recipients as person numbers), the two kinds
    interleaved in proportion; half the emails of each kind."""
    kinds = []
    for k, (*_, per_case, _links) in enumerate(MIX):
        share = emails // len(MIX) + (emails % len(MIX) if k == 0 else 0)
        sizes = [per_case] * (share // per_case) + ([share % per_case] if share % per_case else [])
        kinds += [((i + 0.5) / len(sizes), k, size) for i, size in enumerate(sizes)]
    cases, next_person = [], 0
    for _, k, size in sorted(kinds):
        cases.append((k, [(next_person + j) % RECIPIENTS for j in range(size)]))
        next_person += size
    return cases


def lang_of(person: int) -> str:
    return "en" if person % 3 == 2 else "zh"


def prepare(url: str, emails: int) -> None:
    """Migrate, seed, open the cases of ``plan`` and queue their ``emails`` notifications."""
    from models import Case, Notification, Organization, Period, Person
    from notifications.outbox import new_message_id
    from service import migrate
    from service.db import make_engine, make_session_factory
    from service.seed import seed
    from service.workflow import engine as wf
    from service.workflow.roles import Actor

    migrate.upgrade(url)
    engine = make_engine(url)
    cases = plan(emails)
    with make_session_factory(engine)() as s, s.begin():
        seed(s)
        period = s.scalars(sa.select(Period).where(Period.code == "2010")).one()
        committees = s.scalars(sa.select(Organization).where(
            Organization.kind == "committee").order_by(Organization.id)).all()
        s.execute(sa.insert(Organization), [
            {"code": f"bench-{i:06d}",
             "name_zh": f"{committees[i % len(committees)].name_zh}第{i}党支部",
             "name_en": f"Branch {i} of the {committees[i % len(committees)].name_en}",
             "kind": "branch", "parent_id": committees[i % len(committees)].id, "path": "",
             "active": True, "created_at": NOW} for i in range(len(cases))])
        branches = s.scalars(sa.select(Organization).where(
            Organization.code.like("bench-%")).order_by(Organization.code)).all()
        parents = {c.id: c for c in committees}
        for branch in branches:
            branch.path = f"{parents[branch.parent_id].path}{branch.id}/"
        s.execute(sa.insert(Person), [
            {"name": f"评议人{i}", "email": f"evaluator{i}@example.org",
             "organization_id": committees[i % len(committees)].id, "is_party_member": True,
             "lang": lang_of(i), "active": True, "created_at": NOW} for i in range(RECIPIENTS)])
        people = s.execute(sa.select(Person.id, Person.email, Person.lang).where(
            Person.email.like("evaluator%")).order_by(Person.id)).all()
        ids = wf.open_cases(s, period=period, actor=Actor(flow="bench"),
                            subjects=[wf.Subject("organization", b.id) for b in branches],
                            clock=_fixed(NOW))
        for k, (_, _, stage, status, version, *_) in enumerate(MIX):
            # The fixture shortcut (see module docstring): straight to the state emailed about.
            s.execute(sa.update(Case).where(Case.id.in_(
                [i for i, (kind, _) in zip(ids, cases, strict=True) if kind == k])).values(
                stage=stage, status=status, version=version))
        rows = []
        for case_id, branch, (k, recipients) in zip(ids, branches, cases, strict=True):
            template, action, stage, status, version, *_ = MIX[k]
            context = {"action": action, "case_id": case_id, "stage": stage, "status": status,
                       "unit_zh": branch.name_zh, "unit_en": branch.name_en,
                       "subject_name": branch.name_zh, "period_zh": period.name_zh,
                       "period_en": period.name_en, "due_at": "2010-09-24T16:00:00+00:00",
                       "comment": None}
            for p in recipients:
                person = people[p]
                rows.append({"recipient_person_id": person.id, "recipient_email": person.email,
                             "lang": person.lang, "template": template, "context": context,
                             "case_id": case_id, "case_version": version,
                             "message_id": new_message_id(), "status": "pending", "attempts": 0,
                             "created_at": NOW, "next_attempt_at": NOW})
        for start in range(0, len(rows), 1000):
            s.execute(sa.insert(Notification), rows[start:start + 1000])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    engine.dispose()


def _fixed(now: datetime) -> Any:
    from service.clock import FixedClock

    return FixedClock(now)


# --- the two senders -----------------------------------------------------------------------------

def baseline_messages(emails: int) -> list[Outgoing]:
    """The same templates and languages, rendered and written to bytes as the dispatcher does
    (``notifications.mime``), all before the clock starts."""
    from notifications.mime import build
    from notifications.outbox import new_message_id
    from notifications.render import render, sample_context

    contexts = {t: sample_context(t) for t, *_ in MIX}
    out = []
    for k, person in ((k, p) for k, people in plan(emails) for p in people):
        template, lang = MIX[k][0], lang_of(person)
        rendered = render(template, lang, contexts[template])
        out.append(build(mail_from=MAIL_FROM, to=f"evaluator{person}@example.org",
                         subject=rendered.subject, message_id=new_message_id(), date=NOW,
                         attempt=1, lang=lang, text=rendered.text, html=rendered.html))
    return out


def as_email_messages(messages: list[Outgoing]) -> list[EmailMessage]:
    """The same emails as ``EmailMessage`` objects, for the second baseline: aiosmtplib's own
    ``send_message``, which flattens each one inside the clock (how the dispatcher sent them
    before ``notifications.mime``)."""
    from email import policy
    from email.parser import BytesParser

    parser = BytesParser(policy=policy.default)
    return [parser.parsebytes(m.data) for m in messages]  # type: ignore[misc]


async def bare_send(port: int, messages: list[Outgoing] | list[EmailMessage],
                    connections: int) -> None:
    """aiosmtplib alone: ``connections`` clients taking the next message until none is left."""
    import aiosmtplib

    pending = iter(messages)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname=HOST, port=port, timeout=10)
        await client.connect()
        for message in pending:
            if isinstance(message, Outgoing):
                await client.sendmail(message.sender, message.recipients, message.data)
            else:
                await client.send_message(message)
        await client.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))


def run_baseline(server: Server, emails: int, connections: int, label: str,
                 email_messages: bool = False) -> Run:
    import uvloop

    messages: list[Any] = baseline_messages(emails)
    if email_messages:
        messages = as_email_messages(messages)
    run = Run(f"bare {'send_message' if email_messages else 'aiosmtplib'} ({label})", emails)
    meter = _Meter(server)
    uvloop.run(bare_send(server.port, messages, connections))
    _check_server(run, meter.finish(run), emails)
    return run


def _timed(target: Any, name: str, totals: dict[str, float]) -> None:
    """Wrap ``target.name`` so the CPU time of its thread spent in it adds up in
    ``totals[name]`` (CPU, not wall: the machine is shared; the claim runs in a worker thread,
    sending in the event loop's, where nothing else runs)."""
    original: Callable[..., Any] = getattr(target, name)

    def sync(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.thread_time() - started

    async def coro(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return await original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.thread_time() - started

    setattr(target, name, coro if asyncio.iscoroutinefunction(original) else sync)


def run_dispatcher(server: Server, url: str, emails: int, connections: int, label: str,
                   *, profile: Path | None = None) -> Run:
    """Drain the outbox with the real dispatcher; check every row sent, every link minted."""
    import uvloop

    from models import ActionLink, Event, Notification
    from notifications import dispatcher as dispatcher_module
    from notifications.dispatcher import Dispatcher, DispatchPolicy
    from notifications.render import render
    from notifications.smtp import SmtpTarget
    from service import history
    from service.db import make_engine, make_session_factory

    for template, *_ in MIX:  # a running service has compiled its templates long ago
        for lang in ("zh", "en"):
            from notifications.render import sample_context
            render(template, lang, sample_context(template))
    engine = make_engine(url)
    dispatcher = Dispatcher(make_session_factory(engine), clock=_fixed(NOW), base_url=BASE_URL,
                            mail_from=MAIL_FROM, smtp=SmtpTarget.from_url(
                                f"smtp://{HOST}:{server.port}"),
                            policy=DispatchPolicy(connections=connections))
    run = Run(f"dispatcher, {label}", emails)
    phases: dict[str, float] = {}
    for name in ("_claim", "_cases", "_message", "_links", "_send_all", "_record"):
        if hasattr(dispatcher, name):
            _timed(dispatcher, name, phases)
    if hasattr(dispatcher_module, "render"):
        _timed(dispatcher_module, "render", phases)
    if hasattr(dispatcher_module.links, "issue_many"):
        _timed(dispatcher_module.links, "issue_many", phases)

    async def drain() -> None:
        """``run_forever`` as the service runs it, stopped once the server has every email."""
        stop = asyncio.Event()

        async def watch() -> None:
            while (await asyncio.to_thread(server.ask, "stats"))["received"] < emails:
                await asyncio.sleep(0.02)
            stop.set()

        watcher = asyncio.create_task(watch())
        await dispatcher.run_forever(stop, poll_seconds=0.05)
        await watcher

    profiler = None
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
    meter = _Meter(server)
    if profiler:
        profiler.enable()
    uvloop.run(drain())
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    stats = meter.finish(run)
    run.phases = dict(phases)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            pids = conn.scalars(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = "
                                        "current_database()")).all()
        run.db_cpu = sum(_process_cpu(pid) for pid in pids)  # backends opened for this run
    _check_server(run, stats, emails)
    with make_session_factory(engine)() as s:
        statuses = dict(s.execute(sa.select(Notification.status, sa.func.count())
                                  .group_by(Notification.status)).all())
        links = s.scalar(sa.select(sa.func.count()).select_from(ActionLink))
        events = s.scalar(sa.select(sa.func.count()).where(Event.action == "link_issued"))
        broken = history.verify(s)
    expected_links = sum(MIX[k][6] * len(people) for k, people in plan(emails))
    run.checks.append(f"rows {statuses}, {links} links, {events} link events, "
                      f"chain {'intact' if broken is None else broken}")
    if statuses != {"sent": emails} or links != expected_links or events != expected_links \
            or broken is not None:
        raise SystemExit(f"{run.name}: " + run.checks[-1])
    engine.dispose()
    return run


# --- report --------------------------------------------------------------------------------------

def show(runs: list[Run], baseline: float, connections: int) -> None:
    print(f"\nOutbox to SMTP, {runs[0].emails} emails, {connections} SMTP connections, "
          "uvloop, aiosmtpd (uvloop) in its own process; CPU in seconds (sender: this "
          "process, ms/email: its CPU per email; server; db: the PostgreSQL backends; "
          "machine: all CPUs busy)")
    print(f"{'sender':<30} {'emails/s':>8} {'ratio':>5} {'wall s':>7} {'sender':>7} "
          f"{'ms/email':>8} {'server':>6} {'db':>5} {'machine':>7} {'bytes':>5}")
    for r in runs:
        db = f"{r.db_cpu:>5.1f}" if r.db_cpu else f"{'-':>5}"
        print(f"{r.name:<30} {r.rate:>8.0f} {r.rate / baseline:>5.2f} {r.seconds:>7.1f} "
              f"{r.sender_cpu:>7.1f} {1000 * r.sender_cpu / r.emails:>8.2f} "
              f"{r.server_cpu:>6.1f} {db} {r.machine_busy:>7.0%} {r.avg_bytes:>5.0f}")
    for r in runs:
        if r.phases:
            parts = ", ".join(f"{k.strip('_')} {1000 * v / r.emails:.2f}"
                              for k, v in r.phases.items())
            print(f"  {r.name}: CPU ms/email in: {parts}")
        for check in r.checks:
            print(f"  {r.name}: {check}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4,
                        help="SMTP connections for both senders (the service's default: 4)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the PostgreSQL run")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server = Server()
    try:
        started = time.perf_counter()
        pg_url = create_postgres()
        prepare(pg_url, args.emails)
        sqlite_dir = tempfile.TemporaryDirectory(prefix="pledgeflow-bench-outbox-")
        sqlite_url = f"sqlite:///{sqlite_dir.name}/outbox.db"
        if not args.no_sqlite:
            prepare(sqlite_url, args.emails)
        print(f"prepared {args.emails} pending notifications in "
              f"{time.perf_counter() - started:.1f} s")
        runs = [run_baseline(server, args.emails, args.connections, "before")]
        runs.append(run_dispatcher(server, pg_url, args.emails, args.connections, "PostgreSQL",
                                   profile=args.profile))
        if not args.no_sqlite:
            runs.append(run_dispatcher(server, sqlite_url, args.emails, args.connections,
                                       "SQLite"))
        runs.append(run_baseline(server, args.emails, args.connections, "after"))
        runs.append(run_baseline(server, args.emails, args.connections, "EmailMessage",
                                 email_messages=True))
        sqlite_dir.cleanup()
    finally:
        server.stop()
    baselines = [r.rate for r in runs if r.name.startswith("bare aiosmtplib")]
    baseline = sum(baselines) / len(baselines)
    show(runs, baseline, args.connections)
    pg = next(r for r in runs if "PostgreSQL" in r.name)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cpu = [1000 * r.sender_cpu / r.emails for r in runs if r.name.startswith("bare aiosmtplib")]
    print(f"CPU per email: bare aiosmtplib {sum(cpu) / len(cpu):.2f} ms, dispatcher "
          f"{1000 * pg.sender_cpu / pg.emails:.2f} ms (+ {1000 * pg.db_cpu / pg.emails:.2f} ms "
          f"in PostgreSQL): a CPU-bound sender's ceiling is "
          f"{sum(cpu) / len(cpu) / (1000 * pg.sender_cpu / pg.emails):.0%} of the bare one")
    print(f"target (issue 7): PostgreSQL dispatcher >= 80% of bare aiosmtplib (mean of the two "
          f"baseline runs, {baseline:.0f}/s) -> {pg.rate:.0f}/s = {pg.rate / baseline:.0%}: "
          f"{'MET' if pg.rate >= 0.8 * baseline else 'NOT MET'}")
    legacy = next(r for r in runs if r.name.startswith("bare send_message"))
    print(f"beside aiosmtplib's send_message of EmailMessage objects ({legacy.rate:.0f}/s, "
          f"flattening each in its clock): {pg.rate / legacy.rate:.0%}")


if __name__ == "__main__":
    main()
