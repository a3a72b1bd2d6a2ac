"""The campaign in a real browser: Playwright driving Debian's Chromium against the real app.

The app (``create_app``) runs under uvicorn in a background thread on a free loopback port, on a
private, committed SQLite copy of the seeded database, with a ``FixedClock`` the test moves.
One scenario, one unit (``supply-marketing``, an enterprise committee whose superiors are the
campaign-office admins):

1. its secretary signs in through ``/login``, opens the pledge editor from the inbox, adds a row
   with the add-row button and submits — in a context with JavaScript *disabled*;
2. ``office.deputy`` signs in at phone size with the keyboard only (Tab to the button, Enter) and
   approves from the inbox;
3. a flow publishes it through ``POST /api/v1/bulk/actions`` (a flow token, real HTTP); the public
   bulletin board shows it with the days left, at desktop and at phone size;
4. the builders walk the case to the evaluation (committed, through ``engine.apply``); the outbox
   goes to a recording SMTP server, and an evaluator opens the ballot link from the email,
   chooses, submits and sees the confirmation (the other evaluators vote through the builders);
5. ``office.admin`` closes the round and announces the results with the case page's buttons,
   runs the selection, posts the shortlist and — the clock past the notice window — commends the
   unit, all on the ``/office`` desk; the dashboard is looked at last.

Screenshots of the main pages go to ``test-artifacts/screenshots/`` (git-ignored).

SQLite only: this test is about what a browser does with the pages (forms without JavaScript,
cookies, layout, keyboard), not about the database; the pages' behaviour on PostgreSQL is covered
in-process by tests/test_pages.py and tests/test_office_pages.py, and one backend keeps this run
well under a minute. Chromium is Debian's (``apt-get install chromium``); Playwright's own browser
downloads are never used. Missing, the test is skipped — and fails when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from argon2 import PasswordHasher

from models import Account, Case, EvaluationRound, EvaluatorAssignment, Nomination, Notification
from notifications.dispatcher import Dispatcher, DispatchPolicy
from notifications.links import LINK_LABELS
from notifications.smtp import SmtpTarget
from service import passwords
from service.api.app import create_app
from service.api.http import PROTOCOL
from service.clock import FixedClock
from service.rules import DEFAULT_RULES
from service.settings import Settings
from tests import apiclient as ac
from tests import builders as b
from tests import smtp_servers
from tests.conftest import IN_CI, Database
from tests.smtp_servers import Received, Servers

smtp = smtp_servers.smtp  # the fixture: loopback SMTP servers, always stopped

pytestmark = [pytest.mark.browser,
              # SQLite only (see the module docstring): the session's ``db`` for this module
              pytest.mark.parametrize("db", ["sqlite"], indirect=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}
LOCALE = "zh-CN"  # the campaign's language (people with an English profile still get English)
UNIT = "supply-marketing"
SECRETARY = "supply-marketing.secretary"
SUPERIOR = "office.deputy"  # a campaign-office admin: superior of every enterprise committee
OFFICE = "office.admin"
NOTICE_DAYS = DEFAULT_RULES.notice_days
#: Argon2id at its cheapest (as tests/test_pages.py): sign-ins here are about forms, not hashing.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class Live:
    """The real app served on loopback, its database and the clock it reads."""

    url: str
    db: Database
    clock: FixedClock

    def tx(self):  # type: ignore[no-untyped-def]
        """A committed transaction (``with live.tx() as s: …``)."""
        return _Tx(self.db)

    def case(self, case_id: int) -> Case:
        with self.db.factory() as s:
            return s.get(Case, case_id)  # type: ignore[return-value]


class _Tx:
    def __init__(self, db: Database) -> None:
        self.session = db.factory()

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.tx = self.session.begin()
        return self.session

    def __exit__(self, *exc: object) -> None:
        try:
            self.tx.__exit__(*exc)  # type: ignore[arg-type]
        finally:
            self.session.close()


@pytest.fixture
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        message = (f"Chromium not found at {CHROMIUM}: install Debian's package "
                   "(sudo apt-get install chromium); Playwright's browser downloads are not used")
        if IN_CI:
            pytest.fail(message + " (CI=true: the browser tests are required)", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def live(fresh_db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    """Period 2010 open at 2010-06-01; the app under uvicorn in a thread, always stopped."""
    clock = FixedClock()
    ac.open_2010(fresh_db, clock)
    with fresh_db.factory() as s, s.begin():
        s.execute(sa.update(Account).values(password_hash=CHEAP_HASHER.hash(ac.DEMO_PASSWORD)))
    monkeypatch.setattr(passwords, "_hasher", CHEAP_HASHER)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the port is ours from here on: no race with anyone else
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(Settings(database_url=fresh_db.url, dispatcher=False, base_url=url),
                     clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           http=PROTOCOL, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="uvicorn-browser-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "uvicorn died while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 15 s"
            time.sleep(0.02)
        yield Live(url, fresh_db, clock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.state.engine.dispose()
        assert not thread.is_alive(), "the uvicorn thread is still running"


@pytest.fixture
def chromium(chromium_path: str) -> Iterator[object]:
    """Debian's Chromium under Playwright (a fresh temporary profile per launch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- helpers ------------------------------------------------------------------------------------

def shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def no_horizontal_scroll(page) -> None:  # type: ignore[no-untyped-def]
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways: {widths}"


def tab_to(page, selector: str, limit: int = 80) -> None:  # type: ignore[no-untyped-def]
    """Press Tab until the element matching ``selector`` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)",
                         selector):
            return
    raise AssertionError(f"{selector} not reached with Tab on {page.url}")


def sign_in(page, live: Live, username: str, *, keyboard: bool = False,  # type: ignore[no-untyped-def]
            next_url: str = "/inbox") -> None:
    page.goto(f"{live.url}/login?next={next_url}")
    page.fill("#username", username)
    page.fill("#password", ac.DEMO_PASSWORD)
    if keyboard:
        tab_to(page, 'form[action="/login"] button[type="submit"]')
        page.keyboard.press("Enter")
    else:
        page.click('form[action="/login"] button[type="submit"]')
    page.wait_for_url(f"{live.url}{next_url}*")


def settle(live: Live) -> None:
    """What is queued so far counts as delivered (the ballot invitations are the subject)."""
    with live.tx() as s:
        s.execute(sa.update(Notification).where(Notification.status == "pending")
                  .values(status="sent", sent_at=live.clock.now()))


def dispatch(live: Live, smtp_url: str) -> None:
    dispatcher = Dispatcher(live.db.factory, smtp=SmtpTarget.from_url(smtp_url, timeout=5),
                            clock=live.clock, base_url=live.url,
                            mail_from="pledgeflow <noreply@example.org>",
                            policy=DispatchPolicy(connections=2))
    # In a thread of its own: Playwright's sync API keeps an event loop running on this one.
    with ThreadPoolExecutor(1, thread_name_prefix="dispatch") as pool:
        report = pool.submit(
            lambda: asyncio.run(asyncio.wait_for(dispatcher.run_once(), timeout=60))).result()
    assert report.retried == 0 and report.dead == 0, report.errors


def bulk(live: Live, headers: dict[str, str], action: str, case_id: int) -> None:
    """A flow step over real HTTP: ``POST /api/v1/bulk/actions`` with a flow's token."""
    response = httpx.post(f"{live.url}/api/v1/bulk/actions",
                          json={"action": action, "case_ids": [case_id]}, headers=headers,
                          timeout=15)
    assert response.status_code == 200, response.text
    assert response.json()["succeeded"] == 1, response.json()


def ballot_link(mail: Received) -> str | None:
    labels = LINK_LABELS["cast_ballot"]
    for line in mail.part("plain").splitlines():
        if any(label in line for label in labels) and "/a/" in line:
            return line[line.index("http"):].strip()
    return None


# --- the scenario -------------------------------------------------------------------------------

def test_campaign_in_a_real_browser(live: Live, chromium, smtp: Servers) -> None:  # type: ignore[no-untyped-def]
    browser = chromium
    with live.db.factory() as s:
        case_id = b.unit_case(s, UNIT).id
        unit_zh = b.org(s, UNIT).name_zh

    flow = ac.bearer(live.db, flow="drive_period")  # what the flows act with
    bulk(live, flow, "open_pledge", case_id)  # the pledge stage opens for the unit

    # 1. The secretary drafts and submits the pledge, without JavaScript. ------------------------
    nojs = browser.new_context(viewport=DESKTOP, locale=LOCALE,
                                java_script_enabled=False)
    page = nojs.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live.url}/login")
    assert page.locator("h1").inner_text() == "登录"
    shot(page, "login")
    sign_in(page, live, SECRETARY)
    assert page.locator("h1").inner_text() == "我的待办"
    shot(page, "inbox")
    page.click(f'a[href="/cases/{case_id}/pledge/edit"]')
    page.wait_for_url(f"**/cases/{case_id}/pledge/edit")
    page.fill("#summary", "服务三农，保障供应")
    page.select_option("#items-0-criterion", "development_drive")
    page.fill("#items-0-target", "农资配送网点覆盖全部乡镇")
    page.fill("#items-0-measures", "新建十个配送站，党员包片")
    page.fill("#items-0-deadline_on", "2010-11-01")
    assert page.locator("#items-1-target").count() == 0
    page.click('button[name="add_row"]')  # a plain submit button: the form comes back, one more
    page.wait_for_selector("#items-1-target")
    assert page.input_value("#items-0-target") == "农资配送网点覆盖全部乡镇"  # kept as typed
    assert page.input_value("#summary") == "服务三农，保障供应"
    page.select_option("#items-1-criterion", "political_leadership")
    page.fill("#items-1-target", "每月一次党员学习日")
    page.fill("#items-1-measures", "支部书记轮流讲党课")
    page.fill("#items-1-deadline_on", "2010-12-31")
    shot(page, "pledge_editor")
    page.click('button[name="op"][value="submit"]')
    page.wait_for_url(f"**/cases/{case_id}?done=submit*")
    assert "已提交待审" in page.locator("main").inner_text()
    assert "农资配送网点覆盖全部乡镇" in page.locator("#pledge").inner_text()
    shot(page, "case")
    nojs.close()
    assert live.case(case_id).status == "submitted"

    # 2. The superior approves from the inbox: phone size, keyboard only. ------------------------
    phone = browser.new_context(viewport=PHONE, locale=LOCALE, is_mobile=True,
                                has_touch=True)
    page = phone.new_page()
    page.set_default_timeout(15_000)
    sign_in(page, live, SUPERIOR, keyboard=True)
    no_horizontal_scroll(page)
    shot(page, "inbox_phone")
    tab_to(page, f'a[href="/cases/{case_id}#decide"]')
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/cases/{case_id}#decide")
    page.fill("#decide-comment", "targets are specific and checkable")
    tab_to(page, '#decide button[value="approve"]')
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/cases/{case_id}?done=approve*")
    assert live.case(case_id).status == "approved"

    # 3. A flow publishes it (the bulk endpoint, a flow token); the bulletin shows it. -----------
    phone.close()
    bulk(live, flow, "publish", case_id)
    public = browser.new_context(viewport=PHONE, locale=LOCALE, is_mobile=True, has_touch=True)
    page = public.new_page()  # anyone, not signed in
    page.set_default_timeout(15_000)
    page.goto(f"{live.url}/bulletin")
    no_horizontal_scroll(page)
    board = page.locator("main").inner_text()
    assert unit_zh in board and "农资配送网点覆盖全部乡镇" in board
    assert f"公示还剩 {NOTICE_DAYS} 天" in board
    shot(page, "bulletin_phone")
    public.close()

    desktop = browser.new_context(viewport=DESKTOP, locale=LOCALE)
    page = desktop.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live.url}/bulletin")
    assert f"公示还剩 {NOTICE_DAYS} 天" in page.locator("main").inner_text()
    assert page.locator(f'form[action="/bulletin/objections/{case_id}"]').count() == 1
    shot(page, "bulletin")

    # 4. The evaluation: an evaluator votes through the ballot link in the email. ----------------
    settle(live)
    with live.tx() as s:  # notice, review, fulfilment, evaluation: the builders, engine.apply
        b.drive(s, s.get(Case, case_id), ("evaluation", "voting"), live.clock)
    server = smtp.recording()
    dispatch(live, server.url)
    invitations = [(m, ballot_link(m)) for m in server.messages]
    invitations = [(m, link) for m, link in invitations if link]
    assert invitations, [m.subject for m in server.messages]
    mail, link = invitations[0]
    assert link.startswith(f"{live.url}/a/"), link  # built from the configured base URL
    with live.db.factory() as s:
        round_ = s.scalars(sa.select(EvaluationRound).where(
            EvaluationRound.case_id == case_id)).one()
        criteria = list(round_.criteria)
    voter = browser.new_context(viewport=DESKTOP, locale=LOCALE)
    page = voter.new_page()
    page.set_default_timeout(15_000)
    page.goto(link)
    for code in criteria:
        assert page.locator(f'input[name="answer.{code}"]').count() >= 2
    shot(page, "ballot")
    for n, code in enumerate(criteria):
        option = "satisfied" if n else "fairly_satisfied"
        page.check(f'input[name="answer.{code}"][value="{option}"]')
    page.click('main form button[type="submit"]')
    page.wait_for_selector('.notice.ok[role="status"]')
    assert page.locator("main form").count() == 0  # used up: no second ballot from this page
    shot(page, "ballot_done")
    voter.close()
    with live.db.factory() as s:
        voted = s.scalar(sa.select(sa.func.count()).select_from(EvaluatorAssignment).where(
            EvaluatorAssignment.round_id == round_.id, EvaluatorAssignment.voted_at.is_not(None)))
    assert voted == 1, f"ballot of {mail.rcpt_tos} not counted"
    with live.tx() as s:
        b.vote_all(s, s.get(Case, case_id), live.clock)  # the other evaluators

    # 5. The office: close and announce on the case page, then the commendation desk. ------------
    sign_in(page := desktop.new_page(), live, OFFICE, next_url=f"/cases/{case_id}")
    page.set_default_timeout(15_000)
    for action, status in (("close_round", "tallied"), ("announce_results", "announced")):
        page.click(f'#other-actions button[value="{action}"]')
        page.wait_for_url(f"**/cases/{case_id}?done={action}*")
        assert live.case(case_id).status == status
    desk = f"{live.url}/office/commendations/2010"
    page.goto(desk)
    page.check('#select input[name="include_unfinished"]')  # the other units never got here
    page.click("#select button[type=submit]")
    page.wait_for_url(f"{desk}?done=selected*")
    with live.db.factory() as s:
        nomination = s.scalars(sa.select(Nomination).where(Nomination.case_id == case_id)).one()
    assert nomination.shortlisted
    row = f"#nom-{nomination.id}"
    award = page.locator(f"section.card:has({row})")
    award.locator('form[action$="/notice"] button').click()
    page.wait_for_url(f"{desk}?done=posted*")
    shot(page, "office_desk")
    assert "公示中" in award.inner_text()

    live.clock.advance(days=NOTICE_DAYS, hours=1)  # past the notice window (sessions end too)
    page.goto(desk)
    page.wait_for_url("**/login?next=*")
    sign_in(page, live, OFFICE, next_url="/office/commendations/2010")
    page.click(f"{row} summary")
    page.fill(f"#comment-{nomination.id}", "农资供应保障有力，群众满意")
    page.click(f'{row} button[name="commend"][value="yes"]')
    page.wait_for_url(f"{desk}?done=decided*")
    assert "表彰决定已记录" in page.locator("main").inner_text()
    shot(page, "office_desk_decided")
    assert (live.case(case_id).stage, live.case(case_id).status) == ("closed", "commended")

    page.goto(f"{live.url}/office/dashboard/2010")
    assert page.locator("svg[role=img]").count() >= 3
    shot(page, "dashboard")
    desktop.close()

