"""The campaign office's pages, through the real app in-process, on both databases.

Each test signs in through the ``/login`` form as ``office.admin`` (or an auditor, or a unit
secretary), reads the CSRF token from the page's forms and posts them like a browser without
JavaScript would. Scenes are set through ``engine.apply`` via the builders, never around it.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from html.parser import HTMLParser

import openpyxl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response

from models import (
    Case,
    CriteriaSet,
    Criterion,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Nomination,
    Organization,
    Period,
    Person,
    Position,
    SpotCheck,
)
from service.clock import FixedClock, start_of_day
from tests import apiclient as ac
from tests import builders as b
from tests.conftest import Database

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
UNITS = ("post", "telecom", "power-supply", "urban-investment")


@dataclass
class Office:
    """The app on a fresh database, and office.admin's browser (signed in on first use)."""

    db: Database
    clock: FixedClock
    app_client: TestClient
    _token: str | None = None

    @property
    def client(self) -> TestClient:
        if self._token is None:
            self._token = sign_in(self.app_client, "office.admin")
        return self.app_client

    @property
    def token(self) -> str:
        _ = self.client  # signs in first if needed
        assert self._token
        return self._token

    def relogin(self) -> None:
        """Sign in again on next use (moving the clock on ends the 12-hour session)."""
        self.app_client.cookies.clear()
        self._token = None

    def browser(self, username: str) -> tuple[TestClient, str]:
        """Another person's signed-in browser on the same app, and its CSRF token."""
        other = TestClient(self.app_client.app, raise_server_exceptions=False)
        return other, sign_in(other, username)

    def post(self, url: str, data: dict | None = None, **kwargs: object) -> Response:
        return self.client.post(url, data={"csrf_token": self.token, **(data or {})},
                                follow_redirects=False, **kwargs)  # type: ignore[arg-type]

    def scalar(self, query: sa.Select) -> object:
        with self.db.factory() as s:
            return s.scalar(query)

    def drive(self, unit: str, target: tuple[str, str]) -> int:
        """Walk a unit's case through the engine to ``target`` (committed); its id."""
        with self.db.factory() as s, s.begin():
            case = b.unit_case(s, unit)
            b.drive(s, case, target, self.clock)
        self.relogin()
        return case.id


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client: TestClient, username: str) -> str:
    """Sign in through the form; the session's CSRF token (from the page it leads to)."""
    form = client.get("/login")
    response = client.post("/login", data={"username": username, "password": ac.DEMO_PASSWORD,
                                           "csrf_token": csrf(form.text), "next": "/office"},
                           follow_redirects=True)
    assert response.url.path == "/office", response.text
    return csrf(response.text)  # the sign-out form of any page carries it, even a 403 page


def texts(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


class _FormReader(HTMLParser):
    """What a browser would submit from each form of a page (buttons left out)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: dict[str, dict[str, str]] = {}
        self._form: dict[str, str] | None = None
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = self.forms.setdefault(a.get("action", ""), {})
        elif self._form is None:
            return
        elif tag == "input" and a.get("name"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self._form.setdefault(a["name"], a.get("value", ""))
        elif tag == "select":
            self._select, self._first_option = a.get("name"), None
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = a.get("value", "")
                self._form.setdefault(self._select, self._first_option)
            if "selected" in a:
                self._form[self._select] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a.get("name")
            self._form.setdefault(self._textarea or "", "")

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea:
            self._form[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form(html: str, action: str) -> dict[str, str]:
    """The fields the form posting to ``action`` would send, as the page filled them in."""
    reader = _FormReader()
    reader.feed(html)
    assert action in reader.forms, f"no form posting to {action}: {sorted(reader.forms)}"
    return dict(reader.forms[action])


@pytest.fixture
def office(fresh_db: Database) -> Iterator[Office]:
    clock = FixedClock()
    ac.open_2010(fresh_db, clock)
    client = ac.make_client(fresh_db, clock)
    yield Office(fresh_db, clock, client)
    client.app.state.engine.dispose()  # so that dropping the database need not force it


# --- access ------------------------------------------------------------------------------------

ADMIN_PAGES = ("/office/periods", "/office/periods/2010", "/office/import", "/office/criteria",
               "/office/evaluators", "/office/commendations/2010", "/office/spot-checks/2010")
READ_PAGES = ("/office", "/office/audit", "/office/dashboard/2010")


def test_only_the_office_gets_in_and_auditors_only_read(office: Office) -> None:
    for url in (*ADMIN_PAGES, *READ_PAGES):
        page = office.client.get(url)
        assert page.status_code == 200, (url, page.text[:500])
        assert page.headers["content-type"].startswith("text/html")
    home = office.client.get("/office").text
    assert 'href="/office/commendations/2010"' in home
    assert 'method="post" action="/office' not in home

    anonymous = TestClient(office.client.app, raise_server_exceptions=False)
    assert anonymous.get("/office", follow_redirects=False).headers["location"] == \
        "/login?next=%2Foffice"

    secretary, token = office.browser("post.secretary")
    for url in (*ADMIN_PAGES, *READ_PAGES, "/office/dashboard/2010/results.csv"):
        refused = secretary.get(url)
        assert refused.status_code == 403, url
        assert "无权" in refused.text and refused.headers["content-type"].startswith("text/html")
    assert secretary.post("/office/periods/2010", data={"csrf_token": token},
                          follow_redirects=False).status_code == 403

    auditor, token = office.browser("auditor")
    for url in READ_PAGES:
        page = auditor.get(url)
        assert page.status_code == 200, url
        assert 'method="post" action="/office' not in page.text, url  # no form that acts
    assert auditor.get("/office/dashboard/2010/results.xlsx").status_code == 200
    for url in ADMIN_PAGES:
        assert auditor.get(url).status_code == 403, url
    before = office.scalar(sa.select(sa.func.count()).select_from(Event))
    for url, data in (("/office/periods/2010", {"notice_days": "9"}),
                      ("/office/spot-checks/2010/draw", {"n": "2"}),
                      ("/office/commendations/2010/select", {"include_unfinished": "yes"})):
        refused = auditor.post(url, data={"csrf_token": token, **data}, follow_redirects=False)
        assert refused.status_code == 403, url
    assert office.scalar(sa.select(sa.func.count()).select_from(Event)) == before
    # the office's own forms need the session's CSRF token
    assert office.client.post("/office/spot-checks/2010/draw", data={"n": "2"},
                              follow_redirects=False).status_code == 403


# --- periods ----------------------------------------------------------------------------------

def test_period_edit_saves_with_an_event_and_refuses_bad_calendars_keeping_input(
        office: Office) -> None:
    page = office.client.get("/office/periods/2010")
    values = form(page.text, "/office/periods/2010")
    assert values["review_due_on"] == "2010-11-05" and values["notice_days"] == "7"
    assert values["require_pledge_kept"] == "on" and 'for="quorum"' in page.text

    unchanged = office.post("/office/periods/2010", values)
    assert unchanged.headers["location"] == "/office/periods/2010?saved=0"  # 2/3 shown rounded

    bad = {**values, "review_due_on": "2010-10-01", "commendation_on": "2011-01-05",
           "quorum": "1.5", "notice_days": "abc"}
    refused = office.post("/office/periods/2010", bad)
    assert refused.status_code == 422
    shown = texts(refused.text)
    for sentence in ("点评开始日期（2010-10-11）必须早于点评截止日期（2010-10-01）",
                     "表彰日期（2011-01-05）不在本时段", "法定参评比例取值无效",
                     "公示天数“abc”不是有效数字"):
        assert sentence in shown, sentence
    kept = form(refused.text, "/office/periods/2010")
    assert (kept["review_due_on"], kept["quorum"], kept["notice_days"]) == \
        ("2010-10-01", "1.5", "abc")
    with office.db.factory() as s:
        period = s.scalars(sa.select(Period).where(Period.code == "2010")).one()
        assert period.review_due_on == date(2010, 11, 5) and period.rules == {}
        assert not s.scalars(sa.select(Event).where(Event.action == "period_updated")).all()

    too_short = office.post("/office/periods/2010", {**values, "notice_days": "30"})
    assert too_short.status_code == 422 and "推荐名单公示期" in too_short.text

    good = {**values, "review_due_on": "2010-11-08", "notice_days": "5", "quorum": "0.75",
            "disclosure_scope": "public"}
    saved = office.post("/office/periods/2010", good)
    assert saved.status_code == 303 and saved.headers["location"] == "/office/periods/2010?saved=1"
    after = office.client.get(saved.headers["location"])
    assert "已保存" in after.text and "2010-11-05 → 2010-11-08" in texts(after.text)
    with office.db.factory() as s:
        period = s.scalars(sa.select(Period).where(Period.code == "2010")).one()
        assert period.review_due_on == date(2010, 11, 8)
        assert period.rules == {"notice_days": 5, "quorum": 0.75, "disclosure_scope": "public"}
        event = s.scalars(sa.select(Event).where(Event.action == "period_updated")).one()
    assert event.period_id == period.id and event.actor_person_id is not None
    assert event.payload["changes"] == {
        "review_due_on": ["2010-11-05", "2010-11-08"], "rules.notice_days": [7, 5],
        "rules.quorum": [pytest.approx(2 / 3), 0.75],
        "rules.disclosure_scope": ["unit", "public"]}


# --- criteria ---------------------------------------------------------------------------------

def test_criteria_refinement_for_a_unit_and_the_scales(office: Office) -> None:
    page = office.client.get("/office/criteria")
    assert "政治引领力强" in page.text and "比较满意" in page.text and "基本满意" in page.text
    fields = form(page.text, "/office/criteria/refinements")
    with office.db.factory() as s:
        four = s.scalars(sa.select(CriteriaSet).where(CriteriaSet.code == "four_strengths")).one()
        post = b.org(s, "post")
    data = {**fields, "base_id": str(four.id), "organization_id": str(post.id),
            "name_zh": "邮政四强细化", "name_en": "Post's four strengths",
            "criteria": "service_quality | 服务质量强 | Service quality\nbad line"}
    refused = office.post("/office/criteria/refinements", data)
    assert refused.status_code == 422 and "第2行格式不对" in refused.text
    assert "service_quality | 服务质量强" in refused.text  # what was typed is kept
    added = office.post("/office/criteria/refinements", {**data, "criteria": ""})
    assert added.status_code == 303
    with office.db.factory() as s:
        refined = s.scalars(sa.select(CriteriaSet).where(CriteriaSet.refines_id == four.id)).one()
        codes = list(s.scalars(sa.select(Criterion.code).where(
            Criterion.criteria_set_id == refined.id).order_by(Criterion.position)))
    assert (refined.code, refined.organization_id) == (f"four_strengths.{post.code}", post.id)
    assert codes[0] == "political_leadership" and len(codes) == 4  # the base set's, copied
    again = office.post("/office/criteria/refinements", {**data, "criteria": ""})
    assert again.status_code == 422 and "已有" in again.text
    url = f"/office/criteria/sets/{refined.id}/criteria"
    assert office.post(url, {"code": "service_quality", "name_zh": "服务质量强",
                             "name_en": "Service quality"}).status_code == 303
    assert office.post(url, {"code": "service_quality", "name_zh": "x", "name_en": "x"}
                       ).status_code == 422
    assert office.post(f"/office/criteria/sets/{four.id}/criteria", {
        "code": "extra", "name_zh": "额外", "name_en": "Extra"}).status_code == 422
    assert "服务质量强" in office.client.get("/office/criteria").text
    assert office.scalar(sa.select(sa.func.count()).select_from(Event).where(
        Event.action.in_(("criteria_set_added", "criterion_added")))) == 2


# --- import -----------------------------------------------------------------------------------

ORGS_CSV = """编码,名称,英文名称,类别,上级编码
post.g2,投递党总支,Delivery General Branch,党总支,post
post.g2.b1,投递一支部,Delivery Branch One,党支部,post.g2
post.b1,重复支部,Duplicate,党支部,post
post.x1,无上级支部,Orphan,branch,no-such-unit
post.x2,类别错误,Bad kind,小组,post
post.x3,,No name,branch,post
post.g2,再次出现,Again,党总支,post
post.b1.b1,支部下的支部,Branch under a branch,branch,post.b1
"""

PEOPLE_CSV = """姓名,电子邮箱,组织编码,职务,是否党员
王小明,wang.xm@example.org,post.b1,党员;党员代表,是
李红,li.hong@example.org,post.b2,职工代表,否
赵强,zhao.q@example.org,post.b2,管理员,是
钱多,post.b1.m1@example.org,post.b1,党员,是
孙立,sun.li@example.org,no-such-org,党员,是
"""


def _upload(office: Office, kind: str, text: str, mode: str = "check") -> Response:
    return office.post("/office/import", {"kind": kind, "mode": mode},
                       files={"file": (f"{kind}.csv", text.encode("utf-8-sig"), "text/csv")})


def test_csv_import_dry_run_lists_rejected_rows_and_import_is_all_or_nothing(
        office: Office) -> None:
    page = office.client.get("/office/import")
    assert "上级党组织编码" in page.text and 'enctype="multipart/form-data"' in page.text
    orgs_before = office.scalar(sa.select(sa.func.count()).select_from(Organization))

    dry = _upload(office, "organizations", ORGS_CSV)
    assert dry.status_code == 200
    shown = texts(dry.text)
    assert "可导入 2 行，退回 6 行" in shown
    for line, sentence in ((4, "编码“post.b1”已存在"), (5, "上级组织编码“no-such-unit”不存在"),
                           (6, "类别“小组”无效"), (7, "缺少必填项：name_zh"),
                           (8, "编码“post.g2”与第2行重复"), (9, "上级组织的层级不对")):
        row = re.search(rf'<tr class="rejected"><th scope="row">{line}</th>.*?</tr>', dry.text,
                        re.S)
        assert row and sentence in row.group(0), (line, sentence)
    assert office.scalar(sa.select(sa.func.count()).select_from(Organization)) == orgs_before

    confirm = form(dry.text, "/office/import")
    done = office.post("/office/import", {**confirm, "mode": "import"})
    assert done.status_code == 200 and "已导入 2 行" in done.text
    with office.db.factory() as s:
        post = b.org(s, "post")
        g2, g2b1 = b.org(s, "post.g2"), b.org(s, "post.g2.b1")
        assert (g2.parent_id, g2.kind, g2.path) == (post.id, "general_branch",
                                                    f"{post.path}{g2.id}/")
        assert (g2b1.parent_id, g2b1.path) == (g2.id, f"{g2.path}{g2b1.id}/")
        assert not s.scalar(sa.select(Organization.id).where(Organization.code == "post.x1"))
        event = s.scalars(sa.select(Event).where(Event.action == "directory_imported")).one()
        assert event.payload["codes"] == ["post.g2", "post.g2.b1"]

    # people: the check, then someone takes an e-mail of the file before the import
    dry = _upload(office, "people", PEOPLE_CSV)
    shown = texts(dry.text)
    assert "可导入 2 行，退回 3 行" in shown
    for sentence in ("职务无效：管理员", "电子邮箱post.b1.m1@example.org已被使用",
                     "组织编码“no-such-org”不存在"):
        assert sentence in shown, sentence
    confirm = form(dry.text, "/office/import")
    with office.db.factory() as s, s.begin():
        s.add(Person(name="抢先", email="li.hong@example.org",
                     organization_id=b.org(s, "post.b2").id))
    people_before = office.scalar(sa.select(sa.func.count()).select_from(Person))
    stale = office.post("/office/import", {**confirm, "mode": "import"})
    assert stale.status_code == 422 and "未导入任何数据" in stale.text
    assert office.scalar(sa.select(sa.func.count()).select_from(Person)) == people_before
    assert not office.scalar(sa.select(Person.id).where(Person.email == "wang.xm@example.org"))

    again = office.post("/office/import", {**form(stale.text, "/office/import"),
                                           "mode": "import"})
    assert again.status_code == 200 and "已导入 1 行" in again.text
    with office.db.factory() as s:
        wang = s.scalars(sa.select(Person).where(Person.email == "wang.xm@example.org")).one()
        roles = set(s.scalars(sa.select(Position.role).where(Position.person_id == wang.id)))
    assert wang.is_party_member and roles == {"member", "member_representative"}

    empty = office.post("/office/import", {"kind": "people", "mode": "check"})
    assert empty.status_code == 422 and "请选择要导入的CSV文件" in empty.text
    headerless = _upload(office, "people", "foo,bar\n1,2\n")
    assert "表头缺少以下列" in headerless.text


# --- evaluators -------------------------------------------------------------------------------

def test_evaluators_show_who_voted_never_what_and_change_through_the_engine(
        office: Office) -> None:
    case_id = office.drive("post", ("evaluation", "voting"))
    with office.db.factory() as s, s.begin():
        b.vote_all(s, s.get(Case, case_id), office.clock, option="dissatisfied", limit=1)
    with office.db.factory() as s:
        round_id = s.scalar(sa.select(EvaluationRound.id).where(EvaluationRound.case_id == case_id))
        rows = s.execute(sa.select(EvaluatorAssignment.person_id, EvaluatorAssignment.voted_at,
                                   Person.name)
                         .join(Person, Person.id == EvaluatorAssignment.person_id)
                         .where(EvaluatorAssignment.round_id == round_id)
                         .order_by(EvaluatorAssignment.id)).all()
    voter, waiting = rows[0], rows[1]
    assert voter.voted_at is not None and waiting.voted_at is None

    listing = office.client.get("/office/evaluators")
    assert f'href="/office/evaluators/{case_id}"' in listing.text
    url = f"/office/evaluators/{case_id}"
    page = office.client.get(url)
    assert page.status_code == 200
    table = re.search(r'<table id="evaluators">.*?</table>', page.text, re.S).group(0)
    voter_row = re.search(rf"<tr>\s*<th scope=\"row\">{voter.name}</th>.*?</tr>", table, re.S)
    assert voter_row and "已投票" in voter_row.group(0)
    assert f'name="remove" value="{voter.person_id}"' not in page.text  # a ballot stays counted
    assert f'name="remove" value="{waiting.person_id}"' in page.text
    for answer in ("不满意", "满意", "dissatisfied", "satisfied"):  # never what anyone chose
        assert answer not in texts(page.text).replace("已投票", ""), answer
    fields = form(page.text, url)
    candidate = int(re.findall(r'name="add" value="(\d+)"', page.text)[0])

    refused = office.post(url, {"version": fields["version"], "remove": str(voter.person_id)})
    assert refused.status_code == 422 and "已投票的评议人不能移除" in refused.text
    changed = office.post(url, {"version": fields["version"], "remove": str(waiting.person_id),
                                "add": str(candidate)})
    assert changed.status_code == 303 and changed.headers["location"] == f"{url}?done=1"
    with office.db.factory() as s:
        assigned = set(s.scalars(sa.select(EvaluatorAssignment.person_id)
                                 .where(EvaluatorAssignment.round_id == round_id)))
        event = s.scalars(sa.select(Event).where(Event.case_id == case_id,
                                                 Event.action == "assign_evaluators")).one()
    assert candidate in assigned and voter.person_id in assigned
    assert waiting.person_id not in assigned
    assert event.payload["added"] == [candidate] and event.payload["removed"] == [waiting.person_id]
    stale = office.post(url, {"version": fields["version"], "add": str(waiting.person_id)})
    assert stale.status_code == 422 and "已被他人更新" in stale.text


# --- the commendation desk --------------------------------------------------------------------

def _announced(office: Office, units: tuple[str, ...]) -> list[int]:
    """Walk these units' cases to announced results (one transaction), and sign in again."""
    with office.db.factory() as s, s.begin():
        ids = []
        for unit in units:
            case = b.unit_case(s, unit)
            b.drive(s, case, ("evaluation", "announced"), office.clock)
            ids.append(case.id)
    office.relogin()
    return ids


def _rows(html: str) -> dict[str, str]:
    """Candidate rows of the desk by nomination id."""
    return dict(re.findall(r'<tr id="nom-(\d+)">(.*?)</tr>', html, re.S))


def test_the_desk_selects_posts_the_notice_and_decides_within_the_quota(office: Office) -> None:
    case_ids = _announced(office, UNITS)
    desk_url = "/office/commendations/2010"
    desk = office.client.get(desk_url)
    assert "完成群众评议的事项 4 个" in texts(desk.text)

    refused = office.post(f"{desk_url}/select")
    assert refused.status_code == 422 and "未完成群众评议" in refused.text
    assert office.post(f"{desk_url}/select", {"include_unfinished": "yes"}).status_code == 303
    desk = office.client.get(f"{desk_url}?done=selected")
    assert "已完成评选排序" in desk.text
    with office.db.factory() as s:
        noms = s.execute(sa.select(Nomination.id, Nomination.case_id, Nomination.rank,
                                   Nomination.shortlisted).where(
            Nomination.case_id.in_(case_ids)).order_by(Nomination.rank)).all()
    assert [n.rank for n in noms] == [1, 2, 3, 4]
    assert [n.shortlisted for n in noms] == [True, True, False, False]  # quota 1, 1:1.2
    rows = _rows(desk.text)
    assert "排名第1，进入推荐名单（名额1个，推荐2人/个）" in rows[str(noms[0].id)]
    assert "未进入推荐名单" in rows[str(noms[2].id)]
    third = noms[2].id
    adjust_url = f"{desk_url}/nominations/{third}/adjust"
    fields = form(desk.text, adjust_url)
    assert fields["shortlisted"] == "yes"

    no_reason = office.post(adjust_url, {**fields, "rationale": ""})
    assert no_reason.status_code == 422
    assert "rationale" in _rows(no_reason.text)[str(third)]  # the refusal is on its row
    too_short = office.post(adjust_url, {**fields, "rationale": "ok"})
    assert too_short.status_code == 422 and "at least 4 characters" in too_short.text
    adjusted = office.post(adjust_url, {**fields, "rationale": "群众来信反映突出事迹，经研究列入"})
    assert adjusted.status_code == 303
    with office.db.factory() as s:
        nomination = s.get(Nomination, third)
        assert nomination.shortlisted and nomination.adjustment_rationale.startswith("群众来信")

    desk = office.client.get(desk_url)
    notice_url = next(a for a in re.findall(r'action="([^"]+/notice)"', desk.text))
    assert office.post(notice_url).status_code == 303
    first, second = noms[0].id, noms[1].id
    decide = f"{desk_url}/nominations/{first}/decide"
    early = office.post(decide, {"commend": "yes"})
    assert early.status_code == 422 and "推荐名单公示期尚未结束" in early.text

    office.clock.advance(days=8)
    office.relogin()
    # recusal: a decider who belongs to the candidate's enterprise is refused, with the reason
    with office.db.factory() as s, s.begin():
        deputy = b.person(s, "office.deputy")
        unit_of_first = s.get(Case, noms[0].case_id).organization_id
        s.add(Position(person_id=deputy.id, organization_id=unit_of_first, role="member"))
    deputy_client, deputy_token = office.browser("office.deputy")
    page = deputy_client.get(desk_url)  # office.deputy reads English
    assert "You must recuse yourself" in _rows(page.text)[str(first)]
    page = deputy_client.get(f"{desk_url}?lang=zh")
    assert "您须回避" in _rows(page.text)[str(first)]
    recused = deputy_client.post(decide, data={"csrf_token": deputy_token, "commend": "yes"},
                                 follow_redirects=False)
    assert recused.status_code == 422
    assert "须回避：您与候选对象属同一单位或企业" in _rows(recused.text)[str(first)]

    assert office.post(decide, {"commend": "yes", "comment": "事迹突出"}).status_code == 303
    over = office.post(f"{desk_url}/nominations/{second}/decide", {"commend": "yes"})
    assert over.status_code == 422 and "表彰名额已满" in _rows(over.text)[str(second)]
    for nomination_id in (second, third):
        assert office.post(f"{desk_url}/nominations/{nomination_id}/decide",
                           {"commend": "no"}).status_code == 303
    rest_url = next(a for a in re.findall(r'action="([^"]+/decide-rest)"',
                                          office.client.get(desk_url).text))
    assert office.post(rest_url, {"comment": "未进入推荐名单"}).status_code == 303
    with office.db.factory() as s:
        closed = dict(s.execute(sa.select(Case.id, Case.status)
                                .where(Case.id.in_(case_ids))).tuples().all())
        selection = s.scalars(sa.select(Nomination).where(Nomination.id == first)).one()
        status = s.scalar(sa.text("select status from commendation where id = :c"),
                          {"c": selection.commendation_id})
    assert sorted(closed.values()) == ["commended"] + ["not_commended"] * 3
    assert closed[noms[0].case_id] == "commended" and status == "decided"

    listing = office.client.get(f"{desk_url}/list.csv")
    assert listing.status_code == 200 and listing.content.startswith(b"\xef\xbb\xbf")
    assert "attachment" in listing.headers["content-disposition"]
    table = list(csv.reader(io.StringIO(listing.content.decode("utf-8-sig"))))
    assert table[0][:4] == ["奖项", "排名", "名称", "所在组织"]
    assert [r[7] for r in table[1:]] == ["予以表彰"] + ["不予表彰"] * 3
    assert table[3][9].startswith("群众来信")
    book = openpyxl.load_workbook(io.BytesIO(office.client.get(f"{desk_url}/list.xlsx").content))
    sheet = book.active
    assert [c.value for c in sheet[1]][:3] == ["奖项", "排名", "名称"]
    assert sheet.max_row == 5 and sheet.cell(2, 8).value == "予以表彰"


# --- spot checks ------------------------------------------------------------------------------

def test_spot_check_draw_is_reproducible_from_its_seed_and_findings_are_recorded(
        office: Office) -> None:
    url = "/office/spot-checks/2010"
    with office.db.factory() as s:
        population = sorted(s.scalars(sa.select(Case.organization_id).join(
            Period, Period.id == Case.period_id).where(
            Period.code == "2010", Case.subject_kind == "organization")))
    assert len(population) > 10
    for n in ("0", str(len(population) + 1), "x"):
        refused = office.post(f"{url}/draw", {"n": n})
        assert refused.status_code == 422 and "抽查" in refused.text
    drawn = office.post(f"{url}/draw", {"n": "4"})
    assert drawn.status_code == 303
    with office.db.factory() as s:
        check = s.scalars(sa.select(SpotCheck)).one()
        event = s.scalars(sa.select(Event).where(Event.action == "spot_check_drawn")).one()
    assert re.fullmatch(r"[0-9a-f]{32}", check.seed)
    assert check.organization_ids == random.Random(check.seed).sample(population, 4)
    assert event.payload["seed"] == check.seed and event.payload["population"] == population
    page = office.client.get(drawn.headers["location"])
    assert check.seed in page.text and "用同一种子重新抽取，结果一致" in page.text

    unit = check.organization_ids[0]
    finding_url = f"{url}/{check.id}/findings/{unit}"
    missing = office.post(finding_url, {"result": "rectify", "note": " "})
    assert missing.status_code == 422 and "请填写抽查发现的情况" in missing.text
    assert office.post(finding_url, {"result": "rectify", "note": "民情日记记录不全"}
                       ).status_code == 303
    outside = next(p for p in population if p not in check.organization_ids)
    assert office.post(f"{url}/{check.id}/findings/{outside}",
                       {"result": "satisfactory", "note": "x"}).status_code == 422
    with office.db.factory() as s:
        findings = s.get(SpotCheck, check.id).findings
        recorded = s.scalars(sa.select(Event).where(Event.action == "spot_check_finding")).one()
    assert findings[str(unit)]["result"] == "rectify"
    assert recorded.comment == "民情日记记录不全" and recorded.payload["organization"] == unit
    assert "限期整改 — 民情日记记录不全" in texts(office.client.get(url).text)


# --- audit ------------------------------------------------------------------------------------

def test_audit_verifies_ok_then_shows_the_break_after_tampering(office: Office) -> None:
    page = office.client.get("/office/audit?verify=1")
    assert page.status_code == 200 and "核验通过：链条完整" in page.text
    export = office.client.get("/office/audit/export?period=2010&format=jsonl")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    lines = export.text.strip().splitlines()
    head = json.loads(lines[-1])["head"]
    assert head["hash"] == export.headers["x-chain-head"] and head["events"] == len(lines) - 1
    assert json.loads(lines[0])["action"] in ("open_case", "open_period")
    as_csv = office.client.get("/office/audit/export?period=2010&format=csv")
    rows = list(csv.reader(io.StringIO(as_csv.text)))
    assert rows[0][0] == "seq" and rows[-1][:3] == ["#head", str(head["seq"]), head["hash"]]
    with_head = office.client.get(f"/office/audit?verify=1&head={head['hash']}")
    assert "给出的链头哈希在链上" in with_head.text
    unknown = office.client.get(f"/office/audit?verify=1&head={'ab' * 32}")
    assert "核验未通过" in unknown.text
    assert office.client.get("/office/audit?verify=1&head=nothex").status_code == 422

    with office.db.factory() as s, s.begin():
        s.execute(sa.text("UPDATE event SET comment = 'tampered' WHERE seq = 3"))
    broken = office.client.get("/office/audit?verify=1")
    assert "核验未通过：链条在第 3 条记录处断开" in broken.text
    assert "content does not match its hash (modified)" in broken.text

    auditor, _ = office.browser("auditor")
    assert "核验未通过" in auditor.get("/office/audit?verify=1").text
    assert auditor.get("/office/audit/export?period=2010&format=csv").status_code == 200


# --- dashboard --------------------------------------------------------------------------------

def test_dashboard_draws_svg_charts_beside_tables_and_downloads_parse(office: Office) -> None:
    announced = _announced(office, ("post", "telecom"))
    with office.db.factory() as s, s.begin():
        voting = b.unit_case(s, "power-supply")
        b.drive(s, voting, ("evaluation", "voting"), office.clock)
        b.vote_all(s, voting, office.clock, option="dissatisfied")
        b.act(s, voting, "close_round", b.FLOW, office.clock)  # tallied, not yet announced
    office.clock.set(start_of_day(date(2010, 12, 20)))
    office.relogin()
    page = office.client.get("/office/dashboard/2010")
    assert page.status_code == 200
    for chart in ("chart-stages", "chart-overdue", "chart-satisfaction"):
        svg = re.search(rf'<svg[^>]*aria-labelledby="{chart}-t {chart}-d".*?</svg>', page.text,
                        re.S)
        assert svg, chart
        drawing = svg.group(0)
        assert f'<title id="{chart}-t">' in drawing and f'<desc id="{chart}-d">' in drawing
        assert "<rect" in drawing and 'role="img"' in drawing
    stages = re.search(r'<table id="stages-table">.*?</table>', page.text, re.S).group(0)
    assert "已通报" in stages and "已计票" in stages
    satisfaction = re.search(r'<table id="satisfaction-table">.*?</table>', page.text,
                             re.S).group(0)
    assert "100.0%" in satisfaction and "0.0%" in satisfaction
    overdue = re.search(r'<table id="overdue-table">.*?</table>', page.text, re.S).group(0)
    assert "市供销企业（集团）总公司党委" in overdue  # its cases never left the pledge stage

    results = office.client.get("/office/dashboard/2010/results.csv")
    assert results.status_code == 200 and results.content.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(results.content.decode("utf-8-sig"))))
    assert table[0][:3] == ["事项编号", "类别", "组织编码"]
    by_case = {int(r[0]): r for r in table[1:]}
    assert set(by_case) == {*announced, voting.id}
    assert by_case[announced[0]][5] == "已通报" and by_case[voting.id][5] == "已计票"
    assert float(by_case[voting.id][9]) == 0.0
    book = openpyxl.load_workbook(io.BytesIO(
        office.client.get("/office/dashboard/2010/results.xlsx").content))
    sheet = book.active
    assert [c.value for c in sheet[1]][:2] == ["事项编号", "类别"]
    assert sheet.max_row == 4 and {sheet.cell(r, 1).value for r in (2, 3, 4)} == set(by_case)
    assert office.client.get("/office/dashboard/2010/results.pdf").status_code == 404
    assert office.client.get("/office/dashboard/1999").status_code == 404
