"""The progress dashboard's figures and the office's downloads (CSV and XLSX).

Read-only: cases per stage and status, overdue cases per unit, satisfaction per unit from
tallied or announced rounds; and the tables behind the downloads — evaluation results and the
commendation lists — with Chinese headers. CSV carries a UTF-8 BOM so Excel opens it in the
right encoding; any cell that a spreadsheet would take for a formula is defused.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from models import Case, EvaluationRound, Organization, Period, Person
from service.clock import CAMPAIGN_TZ
from service.commendation_view import awards_of
from service.workflow.table import STATUSES

__all__ = ["StageCount", "UnitFigure", "stage_counts", "overdue_by_unit",
           "satisfaction_by_unit", "results_table", "commendation_table", "to_csv", "to_xlsx",
           "Table"]

AWARD_NAMES = {"advanced_organization": ("先进基层党组织", "Advanced grassroots organisation"),
               "outstanding_member": ("优秀共产党员", "Outstanding Party member")}
ROUND_STATUS_NAMES = {"open": "测评中", "tallied": "已计票", "inconclusive": "未达法定人数"}


@dataclass(frozen=True)
class StageCount:
    stage: str
    status: str
    count: int


@dataclass(frozen=True)
class UnitFigure:
    """One unit's figure on the dashboard (overdue cases, or a satisfaction rate)."""

    organization_id: int
    name_zh: str
    name_en: str
    value: float
    of: int = 0  # overdue: open cases of the unit; satisfaction: member rounds averaged
    extra: float | None = None  # satisfaction: the members' average rate


@dataclass(frozen=True)
class Table:
    """A download: a sheet title, Chinese headers and rows."""

    title: str
    headers: tuple[str, ...]
    rows: list[tuple[Any, ...]]


def stage_counts(session: Session, period_id: int) -> list[StageCount]:
    """Cases of the period at each stage and status, in workflow order (zeros left out)."""
    found = {(stage, status): n for stage, status, n in session.execute(
        sa.select(Case.stage, Case.status, sa.func.count())
        .where(Case.period_id == period_id).group_by(Case.stage, Case.status))}
    return [StageCount(stage, status, found[(stage, status)])
            for stage, statuses in STATUSES.items() for status in statuses
            if found.get((stage, status))]


def overdue_by_unit(session: Session, period_id: int, now: datetime) -> list[UnitFigure]:
    """Per organization (members count with their own): open cases past their deadline, of
    all open cases; most overdue first, units with none left out."""
    overdue = sa.func.sum(sa.case((Case.due_at < now, 1), else_=0))
    rows = session.execute(
        sa.select(Organization.id, Organization.name_zh, Organization.name_en, overdue,
                  sa.func.count())
        .join(Case, Case.organization_id == Organization.id)
        .where(Case.period_id == period_id, Case.stage != "closed")
        .group_by(Organization.id, Organization.name_zh, Organization.name_en)).all()
    figures = [UnitFigure(oid, zh, en, int(n or 0), int(total)) for oid, zh, en, n, total in rows
               if n]
    return sorted(figures, key=lambda f: (-f.value, f.organization_id))


def satisfaction_by_unit(session: Session, period_id: int) -> list[UnitFigure]:
    """Per unit with a tallied or announced round of its own: its overall satisfaction, and
    the average of its members' rounds beside it. Best first."""
    rows = session.execute(
        sa.select(Case.organization_id, Case.subject_kind, EvaluationRound.tally)
        .join(EvaluationRound, EvaluationRound.case_id == Case.id)
        .where(Case.period_id == period_id, EvaluationRound.status == "tallied")).all()
    own: dict[int, float] = {}
    members: dict[int, list[float]] = {}
    for org_id, kind, tally in rows:
        rate = (tally or {}).get("overall_satisfaction")
        if rate is None:
            continue
        if kind == "organization":
            own[org_id] = float(rate)
        else:
            members.setdefault(org_id, []).append(float(rate))
    if not own:
        return []
    names = {oid: (zh, en) for oid, zh, en in session.execute(
        sa.select(Organization.id, Organization.name_zh, Organization.name_en)
        .where(Organization.id.in_(sorted(own))))}
    figures = [UnitFigure(oid, *names[oid], value=rate, of=len(members.get(oid, [])),
                          extra=sum(members[oid]) / len(members[oid]) if members.get(oid)
                          else None) for oid, rate in own.items()]
    return sorted(figures, key=lambda f: (-f.value, f.organization_id))


def _local(value: datetime | None) -> str:
    return value.astimezone(CAMPAIGN_TZ).strftime("%Y-%m-%d %H:%M") if value else ""


def results_table(session: Session, period: Period) -> Table:
    """Every evaluation round of the period: who, turnout and satisfaction (tallied only)."""
    member = aliased(Person)
    rows = session.execute(
        sa.select(Case, EvaluationRound, Organization.code, Organization.name_zh, member.name)
        .join(EvaluationRound, EvaluationRound.case_id == Case.id)
        .join(Organization, Organization.id == Case.organization_id)
        .outerjoin(member, member.id == Case.person_id)
        .where(Case.period_id == period.id)
        .order_by(Case.subject_kind.desc(), Organization.path, Case.id)).all()
    out = []
    for case, round_, code, org_name, person_name in rows:
        tally = round_.tally or {}
        out.append((
            case.id, "单位" if case.subject_kind == "organization" else "党员", code, org_name,
            person_name or "", "已通报" if round_.announced_at else
            ROUND_STATUS_NAMES.get(round_.status, round_.status),
            tally.get("assigned"), tally.get("cast"),
            tally.get("participation"), tally.get("overall_satisfaction"),
            _local(round_.announced_at)))
    return Table(f"群众评议结果 {period.code}", (
        "事项编号", "类别", "组织编码", "组织名称", "党员姓名", "测评状态", "应参评人数",
        "实际参评人数", "参评率", "综合满意率", "通报时间"), out)


def commendation_table(session: Session, period: Period) -> Table:
    """Every candidate of every award of the period, ranked, with reasons and decisions."""
    awards = awards_of(session, period, full=True)
    org_ids = {n["organization_id"] for a in awards for n in a["nominations"]}
    orgs = dict(session.execute(sa.select(Organization.id, Organization.name_zh)
                                .where(Organization.id.in_(sorted(org_ids)))).tuples().all())
    decisions = {"commended": "予以表彰", "not_commended": "不予表彰"}
    out = []
    for award in awards:
        for n in award["nominations"]:
            out.append((
                AWARD_NAMES.get(award["award"], (award["award"],))[0], n["rank"], n["name"],
                orgs.get(n["organization_id"], ""), n["satisfaction"],
                "是" if n["eligible"] else "否", "是" if n["shortlisted"] else "否",
                decisions.get(n["status"], "待定"),
                "；".join(r["zh"] for r in n["reasons"]), n["rationale"] or ""))
    return Table(f"评选表彰名单 {period.code}", (
        "奖项", "排名", "名称", "所在组织", "综合满意率", "符合条件", "进入推荐名单", "表彰决定",
        "评选说明", "调整理由"), out)


def _defuse(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def to_csv(table: Table) -> bytes:
    """UTF-8 with BOM (so Excel reads Chinese correctly), CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.headers)
    writer.writerows([[_defuse(v) for v in row] for row in table.rows])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(table: Table) -> bytes:
    """One sheet: bold header row, frozen below it, columns sized to their text."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = table.title[:31]
    sheet.append(list(table.headers))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in table.rows:
        sheet.append([_defuse(v) for v in row])
    sheet.freeze_panes = "A2"
    for column, header in zip(sheet.columns, table.headers, strict=False):
        width = max([len(str(header)) * 2, *(len(str(c.value or "")) for c in column[1:200])])
        sheet.column_dimensions[column[0].column_letter].width = min(max(width + 2, 8), 60)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
