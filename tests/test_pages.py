"""The server-rendered pages, through the real app in-process, on both databases.

Each test signs in through the ``/login`` form (double-submit CSRF), reads the CSRF token from
the page's forms, and drives the workflow only through the pages — or, to set the scene,
through ``engine.apply`` via the builders. Nothing here needs JavaScript: every form is a plain
POST, and adding or removing pledge items is a submit button.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from httpx import Response

from models import (
    Account,
    Case,
    Event,
    FulfilmentEntry,
    LoginFailure,
    Objection,
    Pledge,
    PledgeItem,
    Review,
)
from service import passwords
from service.clock import FixedClock, end_of_day
from service.rules import DEFAULT_RULES
from tests import apiclient as ac
from tests import builders as b
from tests.conftest import Database, private_database

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PRIVATE_MARK = "PRIVATE-EVIDENCE-42"
NOTICE_DAYS = DEFAULT_RULES.notice_days


@dataclass
class Site:
    db: Database
    clock: FixedClock
    client: TestClient

    def browser(self) -> TestClient:
        """Another person's browser on the same app (its own cookies)."""
        return TestClient(self.client.app, raise_server_exceptions=False)

    def drive(self, target: tuple[str, str], unit: str | None = None,
              member: str | None = None) -> int:
        """Walk a case through the engine to ``target`` (committed); its id."""
        with self.db.factory() as s, s.begin():
            case = b.unit_case(s, unit) if unit else b.member_case(s, member)  # type: ignore[arg-type]
            b.drive(s, case, target, self.clock)
            return case.id

    def case(self, case_id: int) -> Case:
        with self.db.factory() as s:
            return s.get(Case, case_id)  # type: ignore[return-value]


#: Argon2id at its cheapest. Pages are about forms, not key stretching (tests/test_api_auth.py
#: signs in against the real parameters): with the real ones (64 MiB, 3 passes) each sign-in
#: costs a second, and these tests sign in some twenty times per backend.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="module")
def opened(db: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One private database per module and backend with period 2010 open (a copy per test
    costs seconds on PostgreSQL). Each test works on its own units and people, so none sees
    another's changes, and has its own clock starting on the period's first day."""
    with private_database(db, tmp_path_factory.mktemp("pages")) as private:
        ac.open_2010(private, FixedClock())
        with private.factory() as s, s.begin():
            s.execute(sa.update(Account).values(
                password_hash=CHEAP_HASHER.hash(ac.DEMO_PASSWORD)))
        yield private


@pytest.fixture
def site(opened: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The real app on the module's database, with a clock at 2010-06-01 for this test."""
    monkeypatch.setattr(passwords, "_hasher", CHEAP_HASHER)
    clock = b.clock_at(date(2010, 6, 1))
    client = ac.make_client(opened, clock)
    yield Site(opened, clock, client)
    client.close()
    client.app.state.engine.dispose()


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient, username: str, next_url: str = "/inbox") -> str:
    """Sign in through the form; returns the session's CSRF token (from the next page)."""
    form = client.get("/login")
    assert form.status_code == 200
    response = client.post("/login", data={"username": username, "password": ac.DEMO_PASSWORD,
                                           "csrf_token": csrf(form.text), "next": next_url},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_url
    return csrf(client.get("/inbox").text)


def post(client: TestClient, url: str, data: dict[str, str]) -> Response:
    return client.post(url, data=data, follow_redirects=False)


def texts(html: str) -> str:
    """The page's text, tags dropped (for "is this shown" checks)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- sign-in ------------------------------------------------------------------------------------

def test_sign_in_and_out_with_login_csrf_and_readable_refusals(site: Site) -> None:
    client = site.client
    anonymous = client.get("/inbox", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=%2Finbox"
    assert client.get("/", follow_redirects=False).headers["location"] == "/bulletin"

    form = client.get("/login?next=/cases/1")
    token = csrf(form.text)
    assert 'for="username"' in form.text and 'id="username"' in form.text
    wrong = post(client, "/login", {"username": "post.b1.m2", "password": "nope nope nope",
                                    "csrf_token": token, "next": "/cases/1"})
    assert wrong.status_code == 422
    assert "用户名或密码不正确" in wrong.text and 'value="post.b1.m2"' in wrong.text
    # login CSRF: a form posted from elsewhere has no matching cookie token
    forged = site.browser().post("/login", data={"username": "post.b1.m2", "csrf_token": "x" * 43,
                                                 "password": ac.DEMO_PASSWORD},
                                 follow_redirects=False)
    assert forged.status_code == 403 and forged.headers["content-type"].startswith("text/html")
    offsite = post(client, "/login", {"username": "post.b1.m2", "password": ac.DEMO_PASSWORD,
                                      "csrf_token": token, "next": "//evil.example/x"})
    assert offsite.status_code == 303 and offsite.headers["location"] == "/inbox"
    assert "pf_session" in offsite.headers["set-cookie"]

    session_token = csrf(client.get("/inbox").text)
    assert client.get("/", follow_redirects=False).headers["location"] == "/inbox"
    assert client.get("/login", follow_redirects=False).status_code == 303
    assert post(client, "/logout", {}).status_code == 403
    out = post(client, "/logout", {"csrf_token": session_token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/inbox", follow_redirects=False).status_code == 303

    token = csrf(client.get("/login").text)  # signing in used up the old pre-session token
    with site.db.factory() as s, s.begin():  # four failures already; the fifth trips the limit
        s.add_all([LoginFailure(username="post.b2.m3", address="testclient", at=site.clock.now())
                   for _ in range(4)])
    fifth = post(client, "/login", {"username": "post.b2.m3", "password": "wrong password",
                                    "csrf_token": token})
    assert fifth.status_code == 422
    limited = post(client, "/login", {"username": "post.b2.m3", "password": ac.DEMO_PASSWORD,
                                      "csrf_token": token})
    assert limited.status_code == 429 and "15 分钟" in limited.text


# --- inbox and batch ----------------------------------------------------------------------------

def test_inbox_lists_my_tasks_by_deadline_overdue_first(site: Site) -> None:
    own = site.drive(("pledge", "drafting"), unit="supply-marketing")
    branch = site.drive(("pledge", "submitted"), unit="supply-marketing.b1")
    with site.db.factory() as s:
        draft_due = end_of_day(b.period(s).pledge_due_on)
    site.clock.set(draft_due - timedelta(hours=1))
    client = site.client
    sign_in(client, "supply-marketing.secretary")
    html = client.get("/inbox").text
    assert html.index(f'href="/cases/{own}"') < html.index(f'href="/cases/{branch}"')
    assert "badge late" not in html
    assert "起草中" in html and "已提交待审" in html  # status names in the page language
    assert "2010-09-17 24:00" in html  # the deadline, in Beijing time
    assert f'href="/cases/{branch}#decide"' in html and "/inbox/batch" in html

    site.clock.advance(hours=2)  # the draft is now late
    html = client.get("/inbox").text
    rows = re.findall(r'<tr class="([^"]*)">\s*<th scope="row"><a href="/cases/(\d+)"', html)
    assert [int(case_id) for _, case_id in rows] == [own, branch]
    assert [css for css, _ in rows] == ["overdue", ""]
    english = client.get("/inbox?lang=en").text
    assert "Overdue" in english and "Drafting" in english


def test_batch_applies_each_row_on_its_own_and_keeps_refused_rows_typed(site: Site) -> None:
    b1 = site.drive(("pledge", "submitted"), unit="industrial-assets.b1")
    b2 = site.drive(("pledge", "submitted"), unit="industrial-assets.b2")
    b1_sec = site.drive(("pledge", "submitted"), member="industrial-assets.b1.secretary")
    b2_sec = site.drive(("pledge", "submitted"), member="industrial-assets.b2.secretary")
    client = site.client
    token = sign_in(client, "industrial-assets.secretary")
    page = client.get("/inbox/batch")
    assert page.status_code == 200
    for case_id in (b1, b2, b1_sec, b2_sec):
        assert f'name="choice-{case_id}"' in page.text
    assert f'<label for="comment-{b1}">' in page.text

    stale = site.case(b2_sec).version - 1
    result = post(client, "/inbox/batch", {
        "csrf_token": token,
        f"choice-{b1}": "approve", f"comment-{b1}": "specific and checkable",
        f"version-{b1}": str(site.case(b1).version),
        f"choice-{b2}": "return", f"comment-{b2}": "item 2 needs a deadline",
        f"choice-{b1_sec}": "return", f"comment-{b1_sec}": "  ",  # a return needs a comment
        f"choice-{b2_sec}": "approve", f"comment-{b2_sec}": "typed before a change",
        f"version-{b2_sec}": str(stale)})
    assert result.status_code == 422
    assert (site.case(b1).status, site.case(b2).status) == ("approved", "returned")
    assert (site.case(b1_sec).status, site.case(b2_sec).status) == ("submitted", "submitted")
    html = result.text
    assert "a comment is required for this action" in html
    assert "typed before a change" in html  # the refused row keeps its comment
    assert f'name="choice-{b1}"' not in html and f'name="choice-{b1_sec}"' in html
    assert re.search(rf'name="choice-{b1_sec}" value="return" checked', html)
    with site.db.factory() as s:
        comments = dict(s.execute(sa.select(Event.case_id, Event.comment).where(
            Event.action.in_(("approve", "return")),
            Event.case_id.in_((b1, b2, b1_sec, b2_sec)))).all())
    assert comments == {b1: "specific and checkable", b2: "item 2 needs a deadline"}


# --- pledge editor ------------------------------------------------------------------------------

def test_pledge_editor_adds_and_removes_rows_saves_and_submits_without_js(site: Site) -> None:
    case_id = site.drive(("pledge", "drafting"), member="telecom.b1.m2")
    client = site.client
    token = sign_in(client, "telecom.b1.m2")
    url = f"/cases/{case_id}/pledge/edit"
    editor = client.get(url)
    assert editor.status_code == 200 and 'name="items-0-target"' in editor.text
    assert 'value="political_quality"' in editor.text and 'value="role_model"' in editor.text
    assert 'value="political_leadership"' not in editor.text  # a unit criterion, not a member's
    typed = {"csrf_token": token, "summary": "serve the customers",
             "items-0-criterion": "job_skill", "items-0-target": "pass the exam",
             "items-0-measures": "evening classes", "items-0-deadline_on": "2010-11-01"}
    added = post(client, url, {**typed, "add_row": "1"})
    assert added.status_code == 200
    assert 'name="items-1-target"' in added.text and "pass the exam" in added.text
    assert "serve the customers" in added.text
    two = {**typed, "items-1-criterion": "role_model", "items-1-target": "help a colleague",
           "items-1-measures": "weekly", "items-1-deadline_on": "2010-10-01"}
    removed = post(client, url, {**two, "remove_row": "0"})
    assert removed.status_code == 200
    assert "help a colleague" in removed.text and "pass the exam" not in removed.text
    assert 'name="items-1-target"' not in removed.text

    saved = post(client, url, {**two, "op": "save"})
    assert saved.status_code == 303 and saved.headers["location"].startswith(f"/cases/{case_id}")
    assert site.case(case_id).status == "drafting"
    case_page = client.get(saved.headers["location"])
    assert "pass the exam" in case_page.text and "help a colleague" in case_page.text
    submitted = post(client, url, {**two, "op": "submit"})
    assert submitted.status_code == 303
    assert site.case(case_id).status == "submitted"
    assert client.get(url).status_code == 409  # submitted: no longer editable


def test_refused_submit_keeps_what_was_typed_and_lists_every_reason(site: Site) -> None:
    case_id = site.drive(("pledge", "drafting"), unit="power-supply.b2")
    client = site.client
    token = sign_in(client, "power-supply.b2.secretary")
    url = f"/cases/{case_id}/pledge/edit"
    empty = post(client, url, {"csrf_token": token, "summary": "安全供电，优质服务",
                               "items-0-target": "", "op": "submit"})
    assert empty.status_code == 422
    assert "安全供电，优质服务" in empty.text and "the pledge has no items" in empty.text
    assert 'role="alert"' in empty.text
    vague = post(client, url, {"csrf_token": token, "summary": "安全供电",
                               "items-0-criterion": "development_drive",
                               "items-0-target": "reduce outages", "items-1-target": "",
                               "items-2-target": "train two linemen",
                               "items-2-deadline_on": "not a date", "op": "submit"})
    assert vague.status_code == 422
    assert "reduce outages" in vague.text and "train two linemen" in vague.text
    assert 'value="development_drive" selected' in vague.text
    assert "row 3, deadline_on" in vague.text  # blank row 2 left out, still counted as shown
    missing = post(client, url, {"csrf_token": token, "summary": "安全供电",
                                 "items-0-target": "reduce outages", "op": "submit"})
    assert missing.status_code == 422
    assert "items 1 lack a target, measures or a deadline" in missing.text
    with site.db.factory() as s:
        assert s.scalar(sa.select(Pledge.summary).where(Pledge.case_id == case_id)) == ""
    assert site.case(case_id).status == "drafting"


# --- case page ----------------------------------------------------------------------------------

def test_case_page_offers_only_the_actions_this_person_may_take(site: Site) -> None:
    case_id = site.drive(("pledge", "submitted"), unit="commercial-assets")
    url = f"/cases/{case_id}"
    member = site.browser()
    sign_in(member, "commercial-assets.b1.m2")
    assert member.get(url).status_code == 404  # a plain member cannot even see the unit's case

    auditor = site.browser()
    sign_in(auditor, "auditor")
    seen = auditor.get(url)
    assert seen.status_code == 200 and "已提交待审" in seen.text
    assert "target 0" in seen.text  # the pledge and its items
    assert f'action="/cases/{case_id}/act"' not in seen.text
    assert "目前没有需要您在此事项上进行的操作" in seen.text

    superior = site.client
    token = sign_in(superior, "office.admin")
    page = superior.get(url).text
    assert 'value="approve"' in page and 'value="return"' in page
    assert f"/cases/{case_id}/pledge/edit" not in page
    version = str(site.case(case_id).version)
    returned = post(superior, f"{url}/act", {"csrf_token": token, "action": "return",
                                              "comment": "", "version": version})
    assert returned.status_code == 422 and "a comment is required" in returned.text
    approved = post(superior, f"{url}/act", {"csrf_token": token, "action": "approve",
                                              "comment": "好", "version": version})
    assert approved.status_code == 303 and site.case(case_id).status == "approved"
    timeline = superior.get(approved.headers["location"]).text
    assert "批准承诺" in timeline and "好" in texts(timeline)



def test_review_acknowledgement_and_fulfilment_forms(site: Site) -> None:
    case_id = site.drive(("review", "open"), member="urban-investment.b1.m3")
    url = f"/cases/{case_id}"
    subject = site.browser()
    subject_token = sign_in(subject, "urban-investment.b1.m3")
    with site.db.factory() as s:
        item_id = b.pledge_items(s, s.get(Case, case_id))[0].id
    ledger = post(subject, f"{url}/items/{item_id}/fulfilment", {
        "csrf_token": subject_token, "status": "kept", "evidence": "minutes of 2010-07-01",
        "note": "done early"})
    assert ledger.status_code == 303
    assert "minutes of 2010-07-01" in subject.get(url).text

    superior = site.client
    token = sign_in(superior, "urban-investment.b1.secretary")
    assert 'id="review"' in superior.get(url).text
    partial = post(superior, f"{url}/review", {"csrf_token": token, "achievements": "kept all",
                                                "problems": "", "direction": "more study",
                                                "rating.political_quality": "excellent"})
    assert partial.status_code == 422
    assert "kept all" in partial.text and "more study" in partial.text
    assert 'value="excellent" selected' in partial.text
    recorded = post(superior, f"{url}/review", {"csrf_token": token, "achievements": "kept all",
                                                 "problems": "few", "direction": "more study",
                                                 "rating.political_quality": "excellent"})
    assert recorded.status_code == 303 and site.case(case_id).status == "recorded"

    assert 'id="acknowledge"' in subject.get(url).text
    ack = post(subject, f"{url}/acknowledge", {"csrf_token": subject_token,
                                               "rectification_plan": "study twice a month"})
    assert ack.status_code == 303 and site.case(case_id).status == "acknowledged"
    with site.db.factory() as s:
        review = s.scalars(sa.select(Review).where(Review.case_id == case_id)).one()
        assert (review.ratings, review.rectification_plan) == (
            {"political_quality": "excellent"}, "study twice a month")
        assert s.scalar(sa.select(sa.func.count()).select_from(FulfilmentEntry)
                        .where(FulfilmentEntry.pledge_item_id == item_id)) == 1


def test_forms_without_the_csrf_token_are_refused_with_a_page(site: Site) -> None:
    case_id = site.drive(("pledge", "submitted"), unit="dongfang-assets")
    client = site.client
    sign_in(client, "office.admin")
    version = str(site.case(case_id).version)
    for url, data in ((f"/cases/{case_id}/act", {"action": "approve", "version": version}),
                      ("/inbox/batch", {f"choice-{case_id}": "approve"}),
                      (f"/cases/{case_id}/review", {"achievements": "a"}),
                      ("/logout", {})):
        for token in (None, "wrong-token"):
            response = post(client, url, {**data, **({"csrf_token": token} if token else {})})
            assert response.status_code == 403, url
            assert response.headers["content-type"].startswith("text/html")
            assert "未执行任何操作" in response.text
    assert site.case(case_id).status == "submitted"
    objection = site.browser().post(f"/bulletin/objections/{case_id}", data={"body": "x"},
                                    follow_redirects=False)
    assert objection.status_code == 403


def test_cases_of_another_unit_are_not_found(site: Site) -> None:
    case_id = site.drive(("pledge", "drafting"), unit="industrial-assets")
    client = site.client
    token = sign_in(client, "telecom.secretary")
    for response in (client.get(f"/cases/{case_id}"), client.get(f"/cases/{case_id}/pledge/edit"),
                     post(client, f"/cases/{case_id}/act", {"csrf_token": token,
                                                            "action": "withdraw"}),
                     post(client, f"/cases/{case_id}/pledge/edit", {"csrf_token": token,
                                                                    "op": "save"}),
                     client.get("/cases/99999999"), client.get("/cases/not-a-number")):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "找不到这个页面" in response.text
    assert site.case(case_id).version == 2  # opened only; nothing written


# --- bulletin and language ----------------------------------------------------------------------

def test_bulletin_shows_notices_with_days_left_takes_objections_and_hides_private_data(
        site: Site) -> None:
    posted = site.drive(("pledge", "under_notice"), unit="post")
    draft = site.drive(("pledge", "drafting"), unit="telecom")
    with site.db.factory() as s, s.begin():
        case = s.get(Case, posted)
        item = b.pledge_items(s, case)[0]
        b.act(s, case, "record_fulfilment", b.subject_of(s, case), site.clock,
              data={"item_id": item.id, "status": "in_progress", "evidence": PRIVATE_MARK})
        b.act(s, s.get(Case, draft), "edit_pledge", b.subject_of(s, s.get(Case, draft)),
              site.clock, data={"summary": "DRAFT-NOT-PUBLIC", "items": []})
        s.execute(sa.update(PledgeItem).where(PledgeItem.id == item.id)
                  .values(owner_id=b.person(s, "post.clerk").id))
        owner = b.person(s, "post.clerk").name
    public = site.browser()
    board = public.get("/bulletin")
    assert board.status_code == 200 and '<html lang="zh-CN">' in board.text
    assert "target 0" in board.text and f"公示还剩 {NOTICE_DAYS} 天" in board.text
    assert f'action="/bulletin/objections/{posted}"' in board.text
    for secret in ("DRAFT-NOT-PUBLIC", PRIVATE_MARK, "example.org", owner):
        assert secret not in board.text
    token = csrf(board.text)

    empty = post(public, f"/bulletin/objections/{posted}", {"csrf_token": token, "body": "",
                                                            "filed_by_name": "老王"})
    assert empty.status_code == 422 and 'value="老王"' in empty.text
    assert "body: String should have at least 1 character" in empty.text
    filed = post(public, f"/bulletin/objections/{posted}", {"csrf_token": token,
                                                            "body": "目标不够具体"})
    assert filed.status_code == 303 and filed.headers["location"].startswith("/bulletin?filed=1")
    assert "异议已收到" in public.get(filed.headers["location"]).text
    assert post(public, f"/bulletin/objections/{draft}",
                {"csrf_token": token, "body": "?"}).status_code == 404
    with site.db.factory() as s:
        objection = s.scalars(sa.select(Objection)).one()
        assert (objection.case_id, objection.body, objection.filed_by_name) == (
            posted, "目标不够具体", "")

    site.clock.advance(days=2)
    assert f"公示还剩 {NOTICE_DAYS - 2} 天" in public.get("/bulletin").text


def test_english_switch_changes_the_page_language_and_is_remembered(site: Site) -> None:
    client = site.client
    assert '<html lang="zh-CN">' in client.get("/bulletin").text
    english = client.get("/bulletin?lang=en")
    assert '<html lang="en">' in english.text and "Party-affairs bulletin board" in english.text
    assert english.cookies.get("pf_lang") == "en"
    assert '<html lang="en">' in client.get("/login").text  # remembered by the cookie
    sign_in(client, "post.b1.m1")
    assert '<html lang="en">' in client.get("/inbox").text
    assert '<html lang="zh-CN">' in client.get("/inbox?lang=zh").text
