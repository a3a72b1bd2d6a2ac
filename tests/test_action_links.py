"""Action links over HTTP, from the email that carries them, on SQLite and PostgreSQL.

A case is driven through the engine, the outbox is delivered to a real SMTP server on loopback,
and the links are taken from the received email (built from ``Settings.base_url``). Then the
link pages are exercised through the real app (``tests.apiclient.make_client``) with a clock
the test controls: GET and HEAD confirm and change nothing, POST acts once as the recipient;
used, expired, superseded, stale and forged links are refused with a page that says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models import (
    Account,
    ActionLink,
    BallotCount,
    BallotReceipt,
    Case,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Notification,
    Person,
)
from notifications import links
from notifications.dispatcher import Dispatcher, DispatchPolicy
from notifications.links import LINK_LABELS
from notifications.smtp import SmtpTarget
from service.settings import Settings
from tests import builders as b
from tests import smtp_servers
from tests.apiclient import bearer, make_client
from tests.conftest import Database
from tests.smtp_servers import Received, Servers

smtp = smtp_servers.smtp  # the fixture: loopback SMTP servers, always stopped

BASE_URL = "https://pledgeflow.test"
START = date(2010, 6, 1)
UNIT = "supply-marketing"
APPROVER = "office.admin"   # zh; a superior of every enterprise committee
OTHER = "office.deputy"     # en; the other superior told of a submission
STORE = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
LINE = re.compile(r"^\s*- (.+?)[：:]\s*(https?://\S+/a/\S+)\s*$", re.M)


class Site:
    """Period 2010 open, the app on the database, a dispatcher to a recording SMTP server."""

    def __init__(self, db: Database, servers: Servers, units: tuple[str, ...] = (UNIT,)) -> None:
        self.db, self.clock = db, b.clock_at(START)
        with self.tx() as s:
            b.opened_period(s, self.clock)
            for unit in units:
                b.drive(s, b.unit_case(s, unit), ("pledge", "drafting"), self.clock)
        self.settle()
        self.server = servers.recording()
        settings = Settings(database_url=db.url, base_url=BASE_URL, dispatcher=False)
        self.dispatcher = Dispatcher(
            db.factory, smtp=SmtpTarget.from_url(self.server.url, timeout=5), clock=self.clock,
            base_url=settings.base_url, mail_from=settings.mail_from,
            policy=DispatchPolicy(connections=2))
        self.client: TestClient = make_client(db, self.clock)

    def tx(self) -> Any:
        return _Tx(self.db)

    def settle(self) -> None:
        """What is queued so far counts as delivered before the test (not its subject)."""
        with self.tx() as s:
            s.execute(sa.update(Notification).where(Notification.status == "pending")
                      .values(status="sent", sent_at=self.clock.now()))

    def dispatch(self) -> list[Received]:
        """Deliver the outbox; the messages this pass delivered."""
        before = len(self.server.messages)
        report = asyncio.run(asyncio.wait_for(self.dispatcher.run_once(), timeout=60))
        assert report.retried == 0 and report.dead == 0, report.errors
        return self.server.messages[before:]

    def act(self, case_id: int, action: str, who: str, **kwargs: Any) -> None:
        with self.tx() as s:
            case = s.get(Case, case_id)
            actor = b.subject_of(s, case) if who == "subject" else b.actor(s, who)
            b.act(s, case, action, actor, self.clock, **kwargs)

    def case(self, case_id: int) -> Case:
        with self.db.factory() as s:
            return s.get(Case, case_id)

    def events(self, case_id: int, after: int = 0) -> list[Event]:
        with self.db.factory() as s:
            return list(s.scalars(sa.select(Event).where(Event.case_id == case_id,
                                                         Event.seq > after)
                                  .order_by(Event.seq)))

    def last_seq(self) -> int:
        with self.db.factory() as s:
            return s.scalar(sa.select(sa.func.max(Event.seq))) or 0

    def person_id(self, email: str) -> int:
        with self.db.factory() as s:
            return s.scalar(sa.select(Person.id).where(Person.email == email))

    def link_row(self, path: str) -> ActionLink:
        token = path.rsplit("/", 1)[1]
        with self.db.factory() as s:
            return s.scalars(sa.select(ActionLink).where(
                ActionLink.token_hash == hashlib.sha256(token.encode()).hexdigest())).one()

    def submit(self, unit: str = UNIT) -> int:
        with self.tx() as s:
            return b.drive(s, b.unit_case(s, unit), ("pledge", "submitted"), self.clock).id


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
def site(fresh_db: Database, smtp: Servers) -> Site:
    return Site(fresh_db, smtp)


def mail_to(messages: list[Received], username: str) -> Received:
    [mail] = [m for m in messages if m.rcpt_tos == (f"{username}@example.org",)]
    return mail


def link(mail: Received, action: str) -> str:
    """The path (``/a/<token>``) of the email's link for ``action``, found by its label."""
    labels = {label: url for label, url in LINE.findall(mail.part("plain"))}
    url = labels.get(LINK_LABELS[action][0]) or labels[LINK_LABELS[action][1]]
    assert url.startswith(f"{BASE_URL}/a/"), url  # from the configured base URL
    return url.removeprefix(BASE_URL)


def when(value: Any) -> str:
    """How the link page writes an instant."""
    return value.strftime("%Y-%m-%d %H:%M") + " UTC"


def page(response: Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("text/html")
    for header, value in STORE.items():
        assert response.headers.get(header) == value, (header, response.headers)
    return response.text


def submitted(site: Site) -> tuple[int, list[Received]]:
    case_id = site.submit()
    messages = site.dispatch()
    assert {m.rcpt_tos for m in messages} == {(f"{APPROVER}@example.org",),
                                              (f"{OTHER}@example.org",)}
    return case_id, messages


# --- GET and HEAD confirm; POST acts once ------------------------------------------------------

def test_opening_a_link_shows_a_confirmation_and_changes_nothing(site: Site) -> None:
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "approve")
    before, seq = site.case(case_id), site.last_seq()

    for _ in range(3):
        html = page(site.client.get(path), 200)
        assert '<form method="post"' in html and "打开此页面不会执行任何操作" in html
    for _ in range(2):
        head = site.client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Referrer-Policy"] == "no-referrer"
    site.clock.advance(hours=1)
    page(site.client.get(path), 200)

    after = site.case(case_id)
    assert (after.stage, after.status, after.version) == (before.stage, before.status,
                                                          before.version)
    events = site.events(case_id, after=seq)
    assert [e.action for e in events] == ["link_opened"]  # the first opening only
    assert events[0].payload == {"link_id": site.link_row(path).id}
    assert site.link_row(path).opened_at == events[0].occurred_at
    assert site.link_row(path).used_at is None


def test_post_acts_once_as_the_recipient_and_the_link_is_then_used(site: Site) -> None:
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "approve")
    version, seq = site.case(case_id).version, site.last_seq()
    page(site.client.get(path), 200)
    site.clock.advance(minutes=5)
    used_at = site.clock.now()

    html = page(site.client.post(path, data={"comment": "承诺具体可行，同意公示。"}), 200)
    assert "已完成" in html

    case = site.case(case_id)
    assert (case.stage, case.status, case.version) == ("pledge", "approved", version + 1)
    events = site.events(case_id, after=seq)
    assert [e.action for e in events] == ["link_opened", "approve", "link_used"]
    approve, used = events[1], events[2]
    approver = site.person_id(f"{APPROVER}@example.org")
    assert (approve.actor_person_id, approve.actor_flow) == (approver, None)
    assert approve.comment == "承诺具体可行，同意公示。"
    assert used.actor_person_id == approver
    assert used.payload == {"link_id": site.link_row(path).id, "event_seq": approve.seq}
    assert site.link_row(path).used_at == used_at

    site.clock.advance(days=1)
    for response in (site.client.get(path), site.client.post(path, data={})):
        html = page(response, 410)
        assert "此链接已于 " + when(used_at) + " 使用过" in html
        assert "<form" not in html
    assert site.case(case_id).version == version + 1  # nothing more happened
    assert [e.action for e in site.events(case_id, after=used.seq)] == []


def test_a_link_only_does_its_own_action(site: Site) -> None:
    """The action comes from the link, never from the form: a forged form cannot return."""
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "approve")
    seq = site.last_seq()

    page(site.client.post(path, data={"action": "return", "comment": "退回！",
                                      "case_id": "1", "answer.x": "y"}), 200)

    assert site.case(case_id).status == "approved"
    assert [e.action for e in site.events(case_id, after=seq)] == ["approve", "link_used"]


def test_the_return_link_needs_a_comment_and_keeps_what_was_typed(site: Site) -> None:
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "return")
    version = site.case(case_id).version
    typed = "\u3000\u3000"  # ideographic spaces: typed, but not a reason

    html = page(site.client.post(path, data={"comment": typed}), 422)
    assert "a comment is required for this action" in html
    assert f">{typed}</textarea>" in html  # the form again, with what was typed
    assert '<form method="post"' in html
    assert site.case(case_id).version == version and site.link_row(path).used_at is None

    reason = "第3项承诺“降低线损率”目标不够具体，请量化。"
    page(site.client.post(path, data={"comment": reason}), 200)
    case = site.case(case_id)
    assert (case.status, case.version) == ("returned", version + 1)
    [returned] = [e for e in site.events(case_id) if e.action == "return"]
    assert returned.comment == reason
    assert returned.actor_person_id == site.person_id(f"{APPROVER}@example.org")


# --- refused links -----------------------------------------------------------------------------

def test_a_forged_or_altered_token_finds_nothing(site: Site) -> None:
    case_id, messages = submitted(site)
    real = link(mail_to(messages, APPROVER), "approve")
    altered = real[:-1] + ("A" if real[-1] != "A" else "B")
    version, seq = site.case(case_id).version, site.last_seq()
    for path in (f"/a/{secrets.token_urlsafe(32)}", altered, "/a/x"):
        for response in (site.client.get(path), site.client.post(path, data={})):
            html = page(response, 404)
            assert "链接无效" in html or "This link is not valid" in html
        assert site.client.head(path).status_code == 404
    assert site.case(case_id).version == version
    assert site.events(case_id, after=seq) == []


def test_an_expired_link_is_refused(site: Site) -> None:
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "approve")
    expires_at = site.link_row(path).expires_at
    assert expires_at == site.clock.now() + timedelta(days=14)
    version = site.case(case_id).version

    site.clock.set(expires_at + timedelta(minutes=1))
    for response in (site.client.get(path), site.client.post(path, data={})):
        html = page(response, 410)
        assert "此链接已于 " + when(expires_at) + " 过期" in html and "<form" not in html
    assert site.case(case_id).version == version and site.case(case_id).status == "submitted"


def test_how_long_a_link_works_is_configured_per_kind(site: Site) -> None:
    """``PLEDGEFLOW_LINK_EXPIRY_DAYS`` over the defaults: approve links for 2 days here, return
    links keep their 14; an unknown kind or a non-positive span is a settings error."""
    settings = Settings(database_url=site.db.url, link_expiry_days={"approve": 2})
    site.dispatcher.policy = DispatchPolicy(
        connections=2, link_expiry=links.expiry_table(settings.link_expiry_days))
    _, messages = submitted(site)
    mail = mail_to(messages, APPROVER)
    now = site.clock.now()
    assert site.link_row(link(mail, "approve")).expires_at == now + timedelta(days=2)
    assert site.link_row(link(mail, "return")).expires_at == now + timedelta(days=14)

    for bad, says in (({"aprove": 3}, "no action link of kind aprove"),
                      ({"approve": 0}, "more than 0 days")):
        with pytest.raises(ValidationError, match=says):
            Settings(database_url=site.db.url, link_expiry_days=bad)


def test_a_link_superseded_by_a_newer_email_is_refused(site: Site) -> None:
    case_id, messages = submitted(site)
    old = link(mail_to(messages, APPROVER), "approve")

    site.clock.advance(hours=2)
    site.act(case_id, "withdraw", "subject")
    site.act(case_id, "submit", "subject")
    resent_at = site.clock.now()
    new = link(mail_to(site.dispatch(), APPROVER), "approve")
    assert new != old

    for response in (site.client.get(old), site.client.post(old, data={})):
        html = page(response, 410)
        assert "此链接已于 " + when(resent_at) + " 被新邮件中的链接取代" in html
    assert site.case(case_id).status == "submitted"
    page(site.client.post(new, data={}), 200)
    assert site.case(case_id).status == "approved"


def test_a_link_for_a_case_that_moved_on_another_way_is_refused(site: Site) -> None:
    case_id, messages = submitted(site)
    path = link(mail_to(messages, APPROVER), "approve")
    english = link(mail_to(messages, OTHER), "return")

    site.clock.advance(hours=3)
    moved_at = site.clock.now()
    response = site.client.post(f"/api/v1/cases/{case_id}/pledge/approve",
                                headers=bearer(site.db, OTHER), json={})
    assert response.status_code == 200, response.text
    version = site.case(case_id).version

    site.clock.advance(hours=1)
    for response in (site.client.get(path), site.client.post(path, data={})):
        html = page(response, 410)
        assert "此事项在 " + when(moved_at) + " 已有变化" in html and "<form" not in html
    html = page(site.client.get(english), 410)  # the other superior reads English
    assert "This case changed on " + when(moved_at) in html
    case = site.case(case_id)
    assert (case.status, case.version) == ("approved", version)


# --- ballots without an account ----------------------------------------------------------------

def test_an_evaluator_without_an_account_votes_through_the_ballot_link(
        fresh_db: Database, smtp: Servers) -> None:
    site = Site(fresh_db, smtp, units=("telecom",))
    with site.tx() as s:
        case_id = b.drive(s, b.unit_case(s, "telecom"), ("review", "acknowledged"),
                          site.clock).id
    site.settle()
    with site.tx() as s:
        b.drive(s, s.get(Case, case_id), ("evaluation", "voting"), site.clock)
    messages = site.dispatch()
    worker = "telecom.w2"  # a worker representative with no account
    worker_id = site.person_id(f"{worker}@example.org")
    with site.db.factory() as s:
        assert s.scalar(sa.select(Account.id).where(Account.person_id == worker_id)) is None
        round_ = s.scalars(sa.select(EvaluationRound).where(
            EvaluationRound.case_id == case_id)).one()
        assigned = {a.person_id for a in s.scalars(sa.select(EvaluatorAssignment).where(
            EvaluatorAssignment.round_id == round_.id))}
    assert worker_id in assigned
    invited = {m.rcpt_tos for m in messages if link(m, "cast_ballot")}
    with site.db.factory() as s:
        assert invited == {(s.get(Person, p).email,) for p in assigned}
    path = link(mail_to(messages, worker), "cast_ballot")

    form = page(site.client.get(path), 200)
    for code in round_.criteria:
        assert f'name="answer.{code}"' in form
    # another evaluator votes first through their own link: the worker's link stays good
    first = link(mail_to(messages, "telecom.w1"), "cast_ballot")
    answers = {f"answer.{c}": "satisfied" for c in round_.criteria}
    page(site.client.post(first, data=answers), 200)

    version, seq = site.case(case_id).version, site.last_seq()
    site.clock.advance(hours=1)
    voted_at = site.clock.now()
    choices = {f"answer.{c}": "fairly_satisfied" for c in round_.criteria}
    page(site.client.post(path, data=choices), 200)

    with site.db.factory() as s:
        assignment = s.scalars(sa.select(EvaluatorAssignment).where(
            EvaluatorAssignment.round_id == round_.id,
            EvaluatorAssignment.person_id == worker_id)).one()
        assert assignment.voted_at == voted_at
        assert s.scalar(sa.select(sa.func.count()).select_from(BallotReceipt).where(
            BallotReceipt.round_id == round_.id)) == 2
        counts = s.execute(sa.select(BallotCount.criterion, BallotCount.option,
                                     BallotCount.count)
                           .where(BallotCount.round_id == round_.id)).all()
        assert sorted(counts) == sorted((c, o, 1) for c in round_.criteria
                                        for o in ("fairly_satisfied", "satisfied"))
    assert site.case(case_id).version == version  # a ballot does not move the case
    events = site.events(case_id, after=seq)
    assert [e.action for e in events] == ["cast_ballot", "link_used"]
    assert all(e.actor_person_id == worker_id for e in events)
    for event in site.events(case_id):  # the history never holds what anyone chose
        text = json.dumps(event.payload, ensure_ascii=False) + (event.comment or "")
        assert "answers" not in event.payload
        assert "satisfied" not in text
    page(site.client.post(path, data=choices), 410)  # one ballot per evaluator


# --- the token lives only in the email ---------------------------------------------------------

def test_the_raw_token_is_stored_nowhere_and_issuing_opening_using_are_history(
        site: Site) -> None:
    case_id, messages = submitted(site)
    paths = [link(m, a) for m in messages for a in ("approve", "return")]
    tokens = [p.rsplit("/", 1)[1] for p in paths]
    assert len(set(tokens)) == 4 and all(len(t) >= 43 for t in tokens)  # 256 bits
    page(site.client.get(paths[0]), 200)
    page(site.client.post(paths[0], data={}), 200)

    with site.db.factory() as s:
        dumps = []
        for model in (ActionLink, Notification, Event):
            for row in s.scalars(sa.select(model)):
                dumps.append(json.dumps({c.key: getattr(row, c.key)
                                         for c in sa.inspect(model).mapper.column_attrs},
                                        default=str, ensure_ascii=False))
        stored = "\n".join(dumps)
        hashes = set(s.scalars(sa.select(ActionLink.token_hash).where(
            ActionLink.case_id == case_id)))
    for token in tokens:
        assert token not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in hashes

    actions = [e.action for e in site.events(case_id)]
    assert actions.count("link_issued") == 4
    assert actions.count("link_opened") == 1 and actions.count("link_used") == 1
    assert actions.index("link_issued") < actions.index("link_opened") \
        < actions.index("approve") < actions.index("link_used")
