"""Setting up, running and tearing down ``pledgeflow demo``: a fresh database, the service in a
process of its own (``service_process``), the mail catcher, the flows, and ``run_demo``, which
replays the periods and reports. ``serving`` runs an app under uvicorn in a thread, for tests."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.demo.campaign import Demo
from service.demo.people import People
from service.demo.report import DemoReport, PeriodReport

FLOW_NAME = "flows"  # the service token's flow name: every act of the flows carries it
#: How the demo calls the flows by default (see the package docstring, service/demo/__init__.py,
#: for the measurement).
DEMO_FLOW_MODE = "plain (.fn, no Prefect server)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(make_app: Callable[[str], Any], *, name: str = "pledgeflow-demo-service"
            ) -> Iterator[str]:
    """The app ``make_app(base_url)`` builds, under uvicorn on a free loopback port, in a
    thread; stopped (lifespan and all) on exit. Yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = make_app(f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(app, loop="asyncio", http="httptools", lifespan="on",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name,
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the service thread is still running")


# --- setup, run, tear down ------------------------------------------------------------------------

def _flow_functions(prefect: bool) -> dict[str, Callable[..., Any]]:
    import flows.runtime  # noqa: F401  (heartbeat off, analytics off: before prefect runs)
    from flows.drive import drive_period
    from flows.reminders import send_reminders
    from flows.rollover import roll_over_period

    pick = (lambda f: f) if prefect else (lambda f: f.fn)
    return {"drive_period": pick(drive_period), "send_reminders": pick(send_reminders),
            "roll_over_period": pick(roll_over_period)}


def _state_counts(factory: Any, code: str) -> Counter[str]:
    from models import Case, Period

    with factory() as s:
        return Counter({f"{stage}/{status}": n for stage, status, n in s.execute(
            sa.select(Case.stage, Case.status, sa.func.count())
            .join(Period, Period.id == Case.period_id).where(Period.code == code)
            .group_by(Case.stage, Case.status))})


def _sent_by_template(factory: Any) -> Counter[str]:
    from models import Notification

    with factory() as s:
        return Counter({t: n for t, n in s.execute(
            sa.select(Notification.template, sa.func.count())
            .where(Notification.status == "sent").group_by(Notification.template))})


def _drain_outbox(factory: Any, clock: Any, timeout: float = 30.0) -> None:
    """Wait for the dispatcher to send what is due (it polls every second)."""
    from models import Notification

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with factory() as s:
            waiting = s.scalar(sa.select(sa.func.count()).select_from(Notification).where(
                Notification.status.in_(("pending", "sending")),
                Notification.next_attempt_at <= clock.now()))
        if not waiting:
            return
        time.sleep(0.2)


def _audit(factory: Any) -> str:
    from service import history

    with factory() as s:
        broken = history.verify(s)
        seq, head = history.head(s)
    return f"OK: {seq} events, head {head[:16]}…" if broken is None else \
        f"BROKEN at event {broken.seq}: {broken.problem}"


def run_demo(var: Path = Path("var/demo"), *, periods: int = 3, prefect: bool = False,
             echo: Callable[[str], None] = print) -> DemoReport:
    """Replay the seed's campaign (``periods`` of its three periods) and report; everything it
    starts is stopped before it returns."""
    started = time.perf_counter()
    from flows import client as flow_client
    from models import Account
    from notifications.catcher import count_caught, start_catcher
    from service import accounts, migrate
    from service.clock import CAMPAIGN_TZ, SharedClock
    from service.db import make_engine, make_session_factory
    from service.demo.service_process import dispatching_process, serving_process
    from service.seed import seed
    from service.settings import Settings

    if var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True)
    mail_dir = var / "mail"
    url = f"sqlite:///{var.resolve()}/pledgeflow.db"
    migrate.upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    clock = SharedClock(var / "clock", datetime(2010, 5, 31, 9, tzinfo=CAMPAIGN_TZ))
    setup: dict[str, Any] = {}

    def seed_and_sign_in() -> None:  # while the service process starts (~3 s of imports)
        with factory() as session, session.begin():
            seed(session, demo=True)
            setup["flow_token"], _ = accounts.create_token(
                session, name="demo flows", now=clock.now(), flow_name=FLOW_NAME)
            setup["tokens"] = {person_id: accounts.create_token(
                session, name="demo", now=clock.now(), account_id=account_id)[0]
                for account_id, person_id in session.execute(
                    sa.select(Account.id, Account.person_id))}
            setup["office"] = _office_admin(session)
        setup["flows"] = _flow_functions(prefect)

    smtp_port = free_port()
    catcher = start_catcher(mail_dir, port=smtp_port)
    reports: list[PeriodReport] = []
    report = DemoReport(reports, "as Prefect flow runs (ephemeral server)" if prefect
                        else DEMO_FLOW_MODE, url, mail_dir)
    try:
        # The service and its outbox dispatcher in processes of their own (as with
        # `pledgeflow serve` beside `pledgeflow dispatch`): each has a core's interpreter.
        settings = Settings(database_url=url, dispatcher=False, mail_catcher_dir=str(mail_dir),
                            smtp_url=f"smtp://127.0.0.1:{smtp_port}")
        with serving_process(settings, clock, meanwhile=seed_and_sign_in) as base_url, \
                dispatching_process(settings.model_copy(update={"base_url": base_url}), clock), \
                flow_client.override(base_url=base_url, token=setup["flow_token"]):
            tokens, office, flows = setup["tokens"], setup["office"], setup["flows"]
            people = People(base_url, tokens)
            try:
                demo = Demo(factory, clock, people, office, flows, echo)
                report.setup_seconds = time.perf_counter() - started
                echo(f"setup done in {report.setup_seconds:.1f} s; service at {base_url}, "
                     f"mail catcher on port {smtp_port}; flows called {report.flow_mode}")
                all_periods = people.call("GET", "/api/v1/periods").json()
                sent_before, caught_before = Counter[str](), 0
                for n, period in enumerate(all_periods[:periods]):
                    before, refused = people.requests, people.refused.copy()
                    pr = demo.run_period(period, first=n == 0)
                    pr.people_requests = people.requests - before
                    pr.refused = people.refused - refused
                    _drain_outbox(factory, clock)
                    sent, caught = _sent_by_template(factory), count_caught(mail_dir)
                    pr.emails, pr.caught = sent - sent_before, caught - caught_before
                    sent_before, caught_before = sent, caught
                    pr.by_state = _state_counts(factory, period["code"])
                    pr.audit = _audit(factory)
                    reports.append(pr)
                    echo(pr.render())
            finally:
                people.close()
    finally:
        catcher.stop()
        engine.dispose()
    report.total_caught = count_caught(mail_dir)
    final_engine = make_engine(url)
    try:
        report.audit = _audit(make_session_factory(final_engine))
    finally:
        final_engine.dispose()
    report.seconds = time.perf_counter() - started
    echo(f"emails caught in {mail_dir}: {report.total_caught}")
    echo(f"audit verify: {report.audit}")
    echo(f"total wall time: {report.seconds:.1f} s (flows called {report.flow_mode})")
    return report


def _office_admin(session: Any) -> int:
    from models import Account, Organization, Position

    person_id = session.scalar(
        sa.select(Position.person_id)
        .join(Organization, Organization.id == Position.organization_id)
        .join(Account, Account.person_id == Position.person_id)
        .where(Organization.kind == "campaign_office", Position.role == "admin")
        .order_by(Position.id).limit(1))
    if person_id is None:
        raise RuntimeError("no campaign office admin with an account in the demo seed")
    return int(person_id)
