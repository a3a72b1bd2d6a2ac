"""The outbox dispatcher against real SMTP servers on loopback, on SQLite and PostgreSQL.

Cases are driven through the engine (``tests.builders``) in committed transactions; the
dispatcher runs one pass at a time (``asyncio.run(dispatcher.run_once())``) with a FixedClock
that the test moves past ``next_attempt_at`` between passes. The servers (``tests.smtp_servers``)
are aiosmtpd or raw asyncio servers: they refuse with 421/451/550, hang past the client's
timeout, drop the connection in the middle of DATA, or are not there at all.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from models import ActionLink, Case, Event, Notification, Organization, Period, Person
from notifications import outbox
from notifications.dispatcher import Dispatcher, DispatchPolicy, PassReport
from notifications.smtp import SmtpTarget
from service.api.app import create_app
from service.periods import open_period
from service.settings import Settings
from tests import builders as b
from tests import smtp_servers
from tests.conftest import Database
from tests.smtp_servers import Servers, free_port

smtp = smtp_servers.smtp  # the fixture: loopback SMTP servers, always stopped

BASE_URL = "http://pledgeflow.test"
MAIL_FROM = "pledgeflow <noreply@pledgeflow.test>"
START = date(2010, 6, 1)
UNIT = "supply-marketing"
UNITS = (UNIT, "post", "telecom", "power-supply", "urban-investment")
LEASE = timedelta(seconds=60)
CJK = re.compile(r"[\u4e00-\u9fff]")
T = TypeVar("T")


class World:
    """A committed database with period 2010 open, its clock, and the dispatcher's kit."""

    def __init__(self, db: Database) -> None:
        self.db, self.clock = db, b.clock_at(START)
        with self.tx() as s:
            b.opened_period(s, self.clock)
            for unit in UNITS:  # ready to submit
                b.drive(s, b.unit_case(s, unit), ("pledge", "drafting"), self.clock)
        self.settle()

    def tx(self) -> Any:
        """A committed unit of work."""
        return _Tx(self.db)

    def do(self, fn: Callable[[Session], T]) -> T:
        with self.tx() as s:
            return fn(s)

    def settle(self) -> None:
        """Count what is already queued (the period's announcement, stages opened) as
        delivered earlier, so each test sees only the notifications it causes."""
        with self.tx() as s:
            s.execute(sa.update(Notification).where(Notification.status == "pending")
                      .values(status="sent", sent_at=self.clock.now()))
            self.mark = s.scalar(sa.select(sa.func.max(Notification.id))) or 0

    def rows(self) -> list[Notification]:
        """The notifications written since the last ``settle``, oldest first."""
        with self.db.factory() as s:
            return list(s.scalars(sa.select(Notification).where(Notification.id > self.mark)
                                  .order_by(Notification.id)))

    def submit(self, unit: str = UNIT) -> int:
        """Drive a unit's case to pledge/submitted (its superiors are told); the case id."""
        def go(s: Session) -> int:
            return b.drive(s, b.unit_case(s, unit), ("pledge", "submitted"), self.clock).id
        return self.do(go)

    def dispatcher(self, url: str, *, timeout: float = 2.0, **policy: Any) -> Dispatcher:
        settings: dict[str, Any] = dict(backoff_base=timedelta(seconds=1), max_attempts=3,
                                        lease=LEASE, connections=2)
        settings.update(policy)
        return Dispatcher(self.db.factory, smtp=SmtpTarget.from_url(url, timeout=timeout),
                          clock=self.clock, base_url=BASE_URL, mail_from=MAIL_FROM,
                          policy=DispatchPolicy(**settings))

    def later(self, rows: list[Notification]) -> None:
        """Move the clock just past the latest ``next_attempt_at`` of these rows."""
        self.clock.set(max(self.clock.now(), *(r.next_attempt_at for r in rows))
                       + timedelta(milliseconds=1))


class _Tx:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> Session:
        self.session = self.db.factory()
        self.tx = self.session.begin()
        return self.session

    def __exit__(self, *exc: Any) -> None:
        try:
            self.tx.__exit__(*exc)
        finally:
            self.session.close()


@pytest.fixture
def world(fresh_db: Database) -> World:
    return World(fresh_db)


def run(dispatcher: Dispatcher) -> PassReport:
    """One pass, in an event loop of its own (as a scheduled flow runs it)."""
    return asyncio.run(asyncio.wait_for(dispatcher.run_once(), timeout=60))


def ids(rows: list[Notification]) -> set[str]:
    return {r.message_id for r in rows}


# --- content -----------------------------------------------------------------------------------

def test_each_recipient_gets_the_email_in_their_language_with_both_parts(world: World,
                                                                        smtp: Servers) -> None:
    server = smtp.recording()
    case_id = world.submit()
    rows = world.rows()
    assert [(r.template, r.lang) for r in rows] == [("pledge_submitted", "zh"),
                                                    ("pledge_submitted", "en")]
    unit_zh, unit_en = world.do(lambda s: (lambda o: (o.name_zh, o.name_en))(
        s.get(Organization, s.get(Case, case_id).organization_id)))

    report = run(world.dispatcher(server.url))

    assert (report.claimed, report.sent, report.retried, report.dead) == (2, 2, 0, 0)
    assert server.recorder.message_ids() == Counter(ids(rows))
    tokens = []
    for row in rows:
        [mail] = [m for m in server.messages if m.message_id == row.message_id]
        msg = mail.message
        assert mail.rcpt_tos == (row.recipient_email,)
        assert msg["To"] == row.recipient_email and msg["From"] == MAIL_FROM
        assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Pledgeflow-Attempt"] == "1"
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        text, html = mail.part("plain"), mail.part("html")
        links = mail.links()
        assert len(links) == 2 and all(u.startswith(f"{BASE_URL}/a/") for u in links)
        assert all(u in html for u in links)  # the same links as buttons
        assert f"{BASE_URL}/cases/{case_id}" in text
        tokens += [u.rsplit("/", 1)[1] for u in links]
        if row.lang == "zh":
            assert msg["Content-Language"] == "zh-CN"
            assert mail.subject.startswith("【公开承诺】") and unit_zh in mail.subject
            assert "请审核" in mail.subject
            for part in (text, html):
                assert "批准承诺" in part and "退回修改" in part and unit_zh in part
                assert "Approve the pledge" not in part
            assert '<html lang="zh' in html
        else:
            assert msg["Content-Language"] == "en"
            assert mail.subject.startswith("[Public pledge]") and unit_en in mail.subject
            assert not CJK.search(mail.subject)
            for part in (text, html):
                assert "Approve the pledge" in part and "Return for revision" in part
                assert unit_en in part and "批准承诺" not in part
            assert '<html lang="en"' in html
    assert len(set(tokens)) == 4

    rows = world.rows()
    assert {(r.status, r.attempts, r.last_error) for r in rows} == {("sent", 1, None)}
    assert {r.sent_at for r in rows} == {world.clock.now()}
    with world.db.factory() as s:
        issued = s.scalars(sa.select(ActionLink).where(ActionLink.case_id == case_id)).all()
        assert sorted((link.notification_id, link.action) for link in issued) == sorted(
            (r.id, a) for r in rows for a in ("approve", "return"))
        assert {link.case_version for link in issued} == {rows[0].case_version}
        assert s.scalar(sa.select(sa.func.count()).select_from(Event).where(
            Event.case_id == case_id, Event.action == "link_issued")) == 4


# --- transient and permanent failures ----------------------------------------------------------

def test_421_then_451_then_delivered_with_growing_backoff(world: World, smtp: Servers) -> None:
    server = smtp.scripted(["421 4.3.2 Service shutting down, closing transmission channel",
                            "451 4.3.0 Temporary local problem, try again later"])
    world.submit()
    dispatcher = world.dispatcher(server.url)

    t0 = world.clock.now()
    report = run(dispatcher)
    assert (report.retried, report.sent, report.dead) == (2, 0, 0)
    first = world.rows()
    for row in first:
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.last_error.startswith("421")
        # backoff(1) = base * 1 * [0.5, 1.5]
        assert t0 + timedelta(seconds=0.5) <= row.next_attempt_at <= t0 + timedelta(seconds=1.5)

    assert run(dispatcher).claimed == 0  # not due yet: nothing is retried early

    world.later(first)
    t1 = world.clock.now()
    report = run(dispatcher)
    assert (report.retried, report.sent) == (2, 0)
    second = world.rows()
    for before, row in zip(first, second, strict=True):
        assert (row.status, row.attempts) == ("pending", 2)
        assert row.last_error.startswith("451")
        # backoff(2) = base * 2 * [0.5, 1.5], counted from the second attempt
        assert t1 + timedelta(seconds=1) <= row.next_attempt_at <= t1 + timedelta(seconds=3)
        assert row.next_attempt_at > before.next_attempt_at
        assert row.message_id == before.message_id

    world.later(second)
    report = run(dispatcher)
    assert (report.sent, report.retried, report.dead) == (2, 0, 0)
    rows = world.rows()
    assert {(r.status, r.attempts, r.last_error) for r in rows} == {("sent", 3, None)}
    assert [reply[:3] for _, reply in server.handler.refused].count("421") == 2
    assert [reply[:3] for _, reply in server.handler.refused].count("451") == 2
    assert server.recorder.message_ids() == Counter(ids(rows))  # delivered once each
    assert {m.message["X-Pledgeflow-Attempt"] for m in server.messages} == {"3"}


def test_transient_failures_run_out_after_max_attempts(world: World, smtp: Servers) -> None:
    server = smtp.scripted(["451 4.3.0 try later"] * 5)
    world.submit()
    dispatcher = world.dispatcher(server.url, max_attempts=3)
    for _ in range(3):
        run(dispatcher)
        world.later(world.rows())
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("dead", 3)}
    assert all(r.last_error.startswith("451") for r in rows)
    world.clock.advance(hours=1)
    assert run(dispatcher).claimed == 0
    assert server.messages == []


@pytest.mark.parametrize("stage", ["data", "rcpt"])
def test_550_goes_to_dead_letter_at_once_and_shows_in_metrics(world: World, smtp: Servers,
                                                              stage: str) -> None:
    reply = "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"
    server = (smtp.scripted([reply]) if stage == "data"
              else smtp.scripted(rcpt_replies=[reply, reply]))
    world.submit()
    dispatcher = world.dispatcher(server.url, max_attempts=8)

    report = run(dispatcher)

    assert (report.dead, report.retried, report.sent) == (2, 0, 0)
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("dead", 1)}
    assert all("550" in r.last_error and "User unknown" in r.last_error for r in rows)
    assert set(report.errors) == {r.id for r in rows}
    world.clock.advance(days=1)
    assert run(dispatcher).claimed == 0  # a dead letter is never retried
    assert server.messages == []

    app = create_app(Settings(database_url=world.db.url, dispatcher=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    gauges = dict(re.findall(r'^pledgeflow_outbox_notifications\{status="(\w+)"\} (\S+)$',
                             metrics.text, re.M))
    assert float(gauges["dead"]) == 2
    assert float(gauges["pending"]) == 0 and float(gauges["sending"]) == 0


def test_a_server_that_hangs_past_the_timeout_is_a_transient_failure(world: World,
                                                                     smtp: Servers) -> None:
    server = smtp.hanging(hang_first=1, seconds=30)
    world.submit()
    dispatcher = world.dispatcher(server.url, timeout=0.5)

    started = time.monotonic()
    report = run(dispatcher)
    assert time.monotonic() - started < 15  # the pass gave up; it did not wait 30 s
    assert (report.retried, report.sent, report.dead) == (2, 0, 0)
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all("Timeout" in r.last_error or "timed out" in r.last_error.lower()
               for r in rows), [r.last_error for r in rows]
    assert sorted(server.handler.hung) == sorted(ids(rows))
    assert server.messages == []  # the hung attempts never completed

    world.later(rows)
    # The retry meets a healthy server: a normal timeout, as 0.5 s (chosen to cut the hang
    # short) can miss even a greeting on a loaded two-core machine.
    report = run(world.dispatcher(server.url, timeout=10))
    assert report.sent == 2
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}
    assert server.recorder.message_ids() == Counter(ids(rows))


def test_a_connection_dropped_in_the_middle_of_data_is_retried(world: World,
                                                               smtp: Servers) -> None:
    server = smtp.dropping(drop_first=2, drop_after=300)
    world.submit()
    dispatcher = world.dispatcher(server.url, timeout=2)

    report = run(dispatcher)
    assert (report.retried, report.sent, report.dead) == (2, 0, 0)
    assert server.dropped == 2 and server.messages == []
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all(r.last_error for r in rows)

    world.later(rows)
    report = run(dispatcher)
    assert (report.sent, report.retried) == (2, 0)
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}
    assert server.recorder.message_ids() == Counter(ids(rows))  # whole, and once each
    for mail in server.messages:
        assert mail.part("plain") and mail.part("html")


def test_server_down_for_a_while_then_back_loses_nothing(world: World, smtp: Servers) -> None:
    port = free_port()
    first = smtp.recording(port=port)
    dispatcher = world.dispatcher(f"smtp://127.0.0.1:{port}", timeout=5, max_attempts=10)
    world.submit("post")
    assert run(dispatcher).sent == 2  # the connections are now open, and will go stale

    first.stop()
    for unit in ("telecom", "power-supply", "urban-investment"):
        world.submit(unit)
    for attempt in (1, 2, 3, 4):  # nothing listening: refused, pass after pass
        report = run(dispatcher)
        assert (report.sent, report.dead) == (0, 0)
        assert report.retried == 6
        waiting = [r for r in world.rows() if r.status != "sent"]
        assert len(waiting) == 6
        assert {(r.status, r.attempts) for r in waiting} == {("pending", attempt)}
        world.later(waiting)

    second = smtp.recording(port=port)  # back, on the same address
    report = run(dispatcher)
    assert (report.sent, report.retried, report.dead) == (6, 0, 0)

    rows = world.rows()
    assert len(rows) == 8 and {r.status for r in rows} == {"sent"}
    received = first.recorder.message_ids() + second.recorder.message_ids()
    assert set(received) == ids(rows)
    assert max(received.values()) == 1  # no re-send was needed, so no duplicate


def test_passes_in_separate_event_loops_reuse_nothing_stale(world: World,
                                                            smtp: Servers) -> None:
    """``asyncio.run(run_once())`` per pass: connections from a finished loop are not reused."""
    server = smtp.recording()
    dispatcher = world.dispatcher(server.url)
    for unit in ("post", "telecom", "power-supply"):
        world.submit(unit)
        report = run(dispatcher)
        assert (report.sent, report.retried) == (2, 0), report.errors
    assert server.recorder.message_ids() == Counter(ids(world.rows()))


# --- dispatchers that die, and dispatchers side by side ----------------------------------------

def test_a_dispatcher_that_dies_after_claiming_is_taken_over_with_the_same_message_id(
        world: World, smtp: Servers) -> None:
    server = smtp.recording()
    world.submit()
    dying = world.dispatcher(server.url)
    claimed = dying._claim(PassReport())  # ... and then the process is killed
    assert len(claimed) == 2
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sending", 1)}
    assert {r.next_attempt_at for r in rows} == {world.clock.now() + LEASE}

    heir = world.dispatcher(server.url)
    assert run(heir).claimed == 0  # the lease still holds
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    report = run(heir)
    assert report.sent == 2
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}
    assert server.recorder.message_ids() == Counter(ids(rows))
    assert {m.message_id for m in server.messages} == {
        str(smtp_servers.parse(m.data)["Message-ID"]) for _, m in claimed}


def test_a_dispatcher_that_dies_before_writing_its_links_leaves_none(world: World,
                                                                     smtp: Servers) -> None:
    """Killed between the claim and the second transaction (while rendering): the rows wait
    out their lease as "sending", no link of the dead pass exists, and the heir's work."""
    server = smtp.recording()
    case_id = world.submit()
    taken, _ = world.dispatcher(server.url)._take(PassReport(), world.clock.now())
    assert len(taken) == 2
    with world.db.factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ActionLink).where(
            ActionLink.case_id == case_id)) == 0

    heir = world.dispatcher(server.url)
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    assert run(heir).sent == 2
    assert {(r.status, r.attempts) for r in world.rows()} == {("sent", 2)}
    with world.db.factory() as s:  # approve and return, for each of the two superiors
        assert s.scalar(sa.select(sa.func.count()).select_from(ActionLink).where(
            ActionLink.case_id == case_id, ActionLink.superseded_at.is_(None))) == 4


def test_the_service_writes_while_the_dispatcher_renders(world: World, smtp: Servers,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendering happens outside the claim's transaction: a decision recorded meanwhile
    commits at once (on SQLite it used to wait for the whole batch to render, holding the
    database's one write lock)."""
    import notifications.dispatcher as dispatcher_module

    server = smtp.recording()
    world.submit()
    finished: list[int] = []
    real_render = dispatcher_module.render

    def render_while_someone_decides(*args: Any, **kwargs: Any) -> Any:
        if not finished:
            decide = threading.Thread(target=lambda: finished.append(world.submit("post")))
            decide.start()
            decide.join(timeout=10)
            assert finished, "a decision could not commit while the dispatcher rendered"
        return real_render(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "render", render_while_someone_decides)
    report = run(world.dispatcher(server.url))
    assert finished and report.sent == 2, report.errors


def test_a_dispatcher_that_dies_after_sending_causes_a_recognisable_re_send(
        world: World, smtp: Servers) -> None:
    """Sent, but killed before recording it: the heir sends again — with the same Message-ID,
    so the re-send is recognisable (and its links supersede the first copy's)."""
    server = smtp.recording()
    world.submit()
    dying = world.dispatcher(server.url)
    claimed = dying._claim(PassReport())
    results = asyncio.run(dying._send_all(claimed))  # delivered; never recorded
    assert set(results.values()) == {None}
    assert len(server.messages) == 2

    heir = world.dispatcher(server.url)
    world.clock.advance(seconds=LEASE.total_seconds() + 1)
    assert run(heir).sent == 2

    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 2)}
    received = server.recorder.message_ids()
    assert received == Counter({mid: 2 for mid in ids(rows)})  # duplicates = same Message-ID
    for mid in ids(rows):
        attempts = sorted(m.message["X-Pledgeflow-Attempt"] for m in server.messages
                          if m.message_id == mid)
        assert attempts == ["1", "2"]
    with world.db.factory() as s:
        links = s.scalars(sa.select(ActionLink).where(
            ActionLink.notification_id.in_([r.id for r in rows]))).all()
        assert len(links) == 8
        assert sum(link.superseded_at is not None for link in links) == 4


@pytest.mark.postgres_only
def test_two_dispatchers_at_once_on_postgresql_never_send_twice(world: World,
                                                                smtp: Servers) -> None:
    if world.db.backend != "postgresql":
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite serialises writers")
    server = smtp.recording()

    def open_pledges(s: Session) -> None:
        for case in s.scalars(sa.select(Case).where(Case.status == "pending")
                              .order_by(Case.id)).all():
            b.act(s, case, "open_pledge", b.FLOW, world.clock)
        open_period(s, b.period(s, "2011-h1"), actor=b.FLOW, clock=world.clock)
    world.do(open_pledges)
    rows = world.rows()
    assert len(rows) >= 200, len(rows)

    dispatchers = [world.dispatcher(server.url, batch=40, connections=3) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    reports: list[list[PassReport]] = [[], []]
    failures: list[BaseException] = []

    def work(n: int) -> None:
        async def drain() -> None:
            barrier.wait()
            while True:
                report = await dispatchers[n].run_once()
                reports[n].append(report)
                if report.claimed == 0:
                    return
        try:
            asyncio.run(asyncio.wait_for(drain(), timeout=120))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,), name=f"dispatcher-{n}")
               for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    assert not any(t.is_alive() for t in threads), "a dispatcher did not finish"
    assert not failures, failures

    rows = world.rows()
    assert {r.status for r in rows} == {"sent"}
    assert {r.attempts for r in rows} == {1}  # no row was ever claimed twice
    received = server.recorder.message_ids()
    assert set(received) == ids(rows) and max(received.values()) == 1
    sent = [sum(r.sent for r in reports[n]) for n in (0, 1)]
    assert sum(sent) == len(rows)
    assert min(sent) > 0, sent  # both really worked, side by side



def test_run_forever_claims_the_next_batch_while_sending_and_delivers_it_on_stop(
        world: World, smtp: Servers) -> None:
    server = smtp.recording()

    def open_pledges(s: Session) -> None:
        for case in s.scalars(sa.select(Case).where(Case.status == "pending")
                              .order_by(Case.id)).all():
            b.act(s, case, "open_pledge", b.FLOW, world.clock)
    world.do(open_pledges)
    rows = world.rows()
    assert len(rows) >= 30, len(rows)
    dispatcher = world.dispatcher(server.url, batch=7, connections=2)
    sending, claims_while_sending = threading.Event(), []
    claim, send_all = dispatcher._claim, dispatcher._send_all

    def watched_claim(report: PassReport) -> Any:
        claims_while_sending.append(sending.is_set())
        return claim(report)

    async def watched_send_all(prepared: Any) -> Any:
        sending.set()
        try:
            return await send_all(prepared)
        finally:
            sending.clear()
    dispatcher._claim, dispatcher._send_all = watched_claim, watched_send_all  # type: ignore

    async def until(enough: Callable[[], bool]) -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            while not enough():
                await asyncio.sleep(0.005)
            stop.set()
        watcher = asyncio.create_task(watch())
        await dispatcher.run_forever(stop, poll_seconds=0.05)
        await watcher

    # Stopped as soon as the first email arrives: the batch claimed ahead is still delivered.
    asyncio.run(asyncio.wait_for(until(lambda: len(server.messages) > 0), timeout=60))
    after_stop = world.rows()
    assert "sending" not in {r.status for r in after_stop}
    sent = {r.message_id for r in after_stop if r.status == "sent"}
    assert len(sent) >= 14 and server.recorder.message_ids() == Counter(sent)
    assert {r.attempts for r in after_stop if r.status == "pending"} <= {0}

    asyncio.run(asyncio.wait_for(until(lambda: len(server.messages) >= len(rows)), timeout=60))
    rows = world.rows()
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert server.recorder.message_ids() == Counter(ids(rows))  # each once
    assert any(claims_while_sending), claims_while_sending

# --- what gets queued, and what gets dropped ---------------------------------------------------

def test_notifications_of_a_case_that_moved_on_are_dropped(world: World,
                                                           smtp: Servers) -> None:
    server = smtp.recording()
    case_id = world.submit()

    def withdraw(s: Session) -> None:
        case = s.get(Case, case_id)
        b.act(s, case, "withdraw", b.subject_of(s, case), world.clock)
    world.do(withdraw)  # back to drafting before the email about the submission went out

    report = run(world.dispatcher(server.url))

    assert (report.dropped, report.sent) == (2, 0)
    rows = world.rows()
    assert {(r.template, r.status, r.attempts) for r in rows} == {
        ("pledge_submitted", "dropped", 0)}
    assert all("moved on" in r.last_error for r in rows)
    assert server.messages == []
    with world.db.factory() as s:  # no link was minted for an email that was not sent
        assert s.scalar(sa.select(sa.func.count()).select_from(ActionLink).where(
            ActionLink.case_id == case_id)) == 0


def test_a_rolled_back_transition_leaves_no_notification(world: World, smtp: Servers) -> None:
    server = smtp.recording()
    with world.db.factory() as s:
        before = b.notification_count(s)
        version = b.unit_case(s, UNIT).version
    with pytest.raises(RuntimeError, match="changed my mind"), world.tx() as s:
        case = b.drive(s, b.unit_case(s, UNIT), ("pledge", "submitted"), world.clock)
        s.flush()
        assert s.scalar(sa.select(sa.func.count()).select_from(Notification).where(
            Notification.case_id == case.id, Notification.template == "pledge_submitted")) == 2
        raise RuntimeError("changed my mind")
    with world.db.factory() as s:
        assert b.notification_count(s) == before
        case = b.unit_case(s, UNIT)
        assert (case.status, case.version) == ("drafting", version)

    report = run(world.dispatcher(server.url))
    assert report.claimed == 0 and server.messages == []



def test_a_notification_that_cannot_be_rendered_is_dead_and_holds_up_nothing(
        world: World, smtp: Servers) -> None:
    """A row whose context no longer fits its template (say, queued before a template change)
    goes to the dead letters on its own; the links minted for it are rolled back."""
    server = smtp.recording()
    case_id = world.submit()

    def bad_reminder(s: Session) -> None:
        case = s.get(Case, case_id)
        outbox.enqueue_batched(s, b.person(s, "office.deputy"), template="reminder",
                               day=START, now=world.clock.now(),
                               item={"case_id": case.id, "version": case.version,
                                     "link_actions": ["approve"]})  # no facts to show
    world.do(bad_reminder)
    good = [r for r in world.rows() if r.template == "pledge_submitted"]
    [bad] = [r for r in world.rows() if r.template == "reminder"]

    report = run(world.dispatcher(server.url))

    assert (report.sent, report.dead) == (2, 1), report.errors
    assert server.recorder.message_ids() == Counter(ids(good))
    with world.db.factory() as s:
        bad = s.get(Notification, bad.id)
        assert bad.status == "dead" and bad.last_error.startswith("cannot render")
        assert s.scalar(sa.select(sa.func.count()).select_from(ActionLink).where(
            ActionLink.notification_id == bad.id)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(ActionLink).where(
            ActionLink.case_id == case_id, ActionLink.superseded_at.is_(None))) == 4

# --- `pledgeflow dispatch`: the dispatcher in a process of its own ----------------------------

def test_pledgeflow_dispatch_delivers_the_outbox_and_stops_on_sigterm(world: World,
                                                                      smtp: Servers) -> None:
    import os
    import signal
    import subprocess
    import sys

    server = smtp.recording()
    world.submit()
    env = {**os.environ, "PLEDGEFLOW_DATABASE_URL": world.db.url,
           "PLEDGEFLOW_SMTP_URL": server.url, "PLEDGEFLOW_BASE_URL": BASE_URL}
    child = subprocess.Popen([sys.executable, "-m", "service.cli", "dispatch"], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(server.messages) < 2 and time.monotonic() < deadline \
                and child.poll() is None:
            time.sleep(0.1)
        while {r.status for r in world.rows()} != {"sent"} and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    assert child.returncode == 0, stderr
    assert "delivering the outbox" in stderr
    assert server.recorder.message_ids() == Counter(ids(world.rows()))
    assert {r.status for r in world.rows()} == {"sent"}


# --- reminders, batched per recipient per day --------------------------------------------------

def _item(s: Session, case: Case) -> dict[str, Any]:
    org = s.get(Organization, case.organization_id)
    period = s.get(Period, case.period_id)
    member = s.get(Person, case.person_id) if case.person_id else None
    return {"case_id": case.id, "version": case.version, "stage": case.stage,
            "status": case.status, "unit_zh": org.name_zh, "unit_en": org.name_en,
            "subject_name": member.name if member else org.name_zh,
            "period_zh": period.name_zh, "period_en": period.name_en,
            "due_at": case.due_at.isoformat() if case.due_at else None, "comment": None}


def test_reminders_are_batched_per_recipient_per_day(world: World, smtp: Servers) -> None:
    server = smtp.recording()
    day = date(2010, 6, 1)

    def second_period(s: Session) -> None:
        open_period(s, b.period(s, "2011-h1"), actor=b.FLOW, clock=world.clock)
    world.do(second_period)
    world.settle()

    def remind(s: Session) -> tuple[list[int], list[bool]]:
        recipient = b.person(s, "office.admin")
        cases = s.scalars(sa.select(Case).order_by(Case.id).limit(201)).all()
        added = [outbox.enqueue_batched(s, recipient, template="reminder", day=day,
                                        item=_item(s, c), now=world.clock.now())
                 for c in cases[:200]]
        # the same case twice on one day is listed once
        added.append(outbox.enqueue_batched(s, recipient, template="reminder", day=day,
                                            item=_item(s, cases[0]), now=world.clock.now()))
        return [c.id for c in cases], added
    case_ids, added = world.do(remind)
    assert added == [True] * 200 + [False]

    [row] = world.rows()
    assert (row.template, row.status, row.lang) == ("reminder", "pending", "zh")
    assert [i["case_id"] for i in row.context["items"]] == case_ids[:200]

    report = run(world.dispatcher(server.url))
    assert report.sent == 1
    [mail] = server.messages
    assert mail.message_id == row.message_id
    text = mail.part("plain")
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", text, re.M)]
    assert numbers == list(range(1, 201))
    listed = {int(n) for n in re.findall(rf"{re.escape(BASE_URL)}/cases/(\d+)", text)}
    assert listed == set(case_ids[:200])
    assert "等200项" in mail.subject

    # After the day's email has gone, a new item does not join it ...
    def late(s: Session) -> tuple[bool, bool]:
        recipient = b.person(s, "office.admin")
        case = s.get(Case, case_ids[200])
        same_day = outbox.enqueue_batched(s, recipient, template="reminder", day=day,
                                          item=_item(s, case), now=world.clock.now())
        next_day = outbox.enqueue_batched(s, recipient, template="reminder",
                                          day=day + timedelta(days=1), item=_item(s, case),
                                          now=world.clock.now())
        return same_day, next_day
    assert world.do(late) == (False, True)

    # ... it waits for the next day's, a new email with a Message-ID of its own.
    first, second = world.rows()
    assert first.status == "sent" and len(first.context["items"]) == 200
    assert second.status == "pending" and second.message_id != first.message_id
    assert [i["case_id"] for i in second.context["items"]] == [case_ids[200]]
    assert second.batch_key != first.batch_key

    assert run(world.dispatcher(server.url)).sent == 1
    assert len(server.messages) == 2
    assert server.recorder.message_ids() == Counter(ids([first, second]))

