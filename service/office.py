"""The campaign office's own work: period calendars and rules, criteria refinements, and the
commendation desk's steps (spot checks are in ``service.spot_checks``).

Every function takes a session and never commits (the request is the unit of work); every
change appends an event to the hash chain in the same transaction. A refusal raises
``InvalidInput`` or ``TransitionRefused`` with *every* reason, as ``Why`` — a ``Reason`` that
also carries its Chinese sentence, so the pages can say it in the page language.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    CriteriaSet,
    Criterion,
    Nomination,
    Organization,
    Period,
)
from service import commendation as selection_service
from service import history
from service.clock import Clock
from service.errors import InvalidInput, NotFound, Reason, TransitionRefused
from service.periods import UNIT_KINDS, get_period
from service.rules import CampaignRules
from service.workflow import engine, inputs
from service.workflow.roles import Actor

__all__ = ["Why", "CALENDAR_FIELDS", "CALENDAR_LABELS", "RULE_LABELS", "update_period",
           "add_refined_set", "add_criterion", "select_candidates", "post_shortlist", "adjust",
           "decide", "ready_counts"]


@dataclass(frozen=True)
class Why(Reason):
    """A refusal reason with its Chinese sentence beside the English one."""

    message_zh: str = ""


CALENDAR_FIELDS = ("starts_on", "pledge_due_on", "review_opens_on", "review_due_on",
                   "evaluation_opens_on", "evaluation_due_on", "commendation_on", "ends_on")
#: The stage dates in the order they must come (strictly), all inside the period.
STAGE_DATES = CALENDAR_FIELDS[1:-1]
CALENDAR_LABELS = {
    "starts_on": ("开始日期", "Start"), "ends_on": ("结束日期", "End"),
    "pledge_due_on": ("承诺截止日期", "Pledges due"),
    "review_opens_on": ("点评开始日期", "Review opens"),
    "review_due_on": ("点评截止日期", "Reviews due"),
    "evaluation_opens_on": ("评议开始日期", "Evaluation opens"),
    "evaluation_due_on": ("评议截止日期", "Evaluation due"),
    "commendation_on": ("表彰日期", "Commendation day"),
}
RULE_LABELS = {
    "scale": ("测评等级", "Ballot scale"), "quorum": ("法定参评比例", "Quorum"),
    "satisfaction_threshold": ("满意率门槛", "Satisfaction threshold"),
    "require_pledge_kept": ("须全部兑现承诺", "Pledges must be kept"),
    "quota_ratio": ("表彰名额比例", "Quota ratio"),
    "candidate_ratio": ("推荐差额比例", "Candidate ratio"),
    "notice_days": ("公示天数", "Notice days"),
    "round_extension_days": ("测评延长天数", "Round extension (days)"),
    "disclosure_scope": ("结果通报范围", "Disclosure scope"),
    "reminder_days_before": ("截止前提醒（天）", "Reminders (days before)"),
    "escalation_days_after": ("逾期上报（天）", "Escalate after (days)"),
}
_FLOATS = ("quorum", "satisfaction_threshold", "quota_ratio", "candidate_ratio")
_INTS = ("notice_days", "round_extension_days", "escalation_days_after")


# --- periods -----------------------------------------------------------------------------------

def _parse_calendar(values: dict[str, str], reasons: list[Why]) -> dict[str, date]:
    out: dict[str, date] = {}
    for name in CALENDAR_FIELDS:
        raw = values.get(name, "").strip()
        zh, en = CALENDAR_LABELS[name]
        try:
            out[name] = date.fromisoformat(raw)
        except ValueError:
            reasons.append(Why("bad_date", f"{en}: {raw or '(empty)'} is not a date (YYYY-MM-DD)",
                               f"{zh}“{raw or '空'}”不是有效日期（格式：年-月-日）"))
    return out


def _parse_rules(values: dict[str, str], reasons: list[Why]) -> CampaignRules | None:
    raw: dict[str, Any] = {"scale": values.get("scale", "").strip(),
                           "disclosure_scope": values.get("disclosure_scope", "").strip(),
                           "require_pledge_kept": values.get("require_pledge_kept") in (
                               "on", "true", "1", "yes")}
    bad = False
    for name in (*_FLOATS, *_INTS, "reminder_days_before"):
        text = values.get(name, "").strip().replace("，", ",")
        zh, en = RULE_LABELS[name]
        try:
            if name in _FLOATS:
                raw[name] = float(text)
            elif name in _INTS:
                raw[name] = int(text)
            else:
                raw[name] = tuple(int(p) for p in text.split(",") if p.strip())
        except ValueError:
            bad = True
            reasons.append(Why("bad_number", f"{en}: {text or '(empty)'} is not a number",
                               f"{zh}“{text or '空'}”不是有效数字"))
    try:
        rules = CampaignRules.model_validate(raw)
    except ValidationError as exc:
        for e in exc.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            zh, en = RULE_LABELS.get(name, ("规则", "Rules"))
            message = str(e["msg"]).removeprefix("Value error, ")
            reasons.append(Why("bad_rule", f"{en}: {message}",
                               f"{zh}取值无效：{_zh_limit(e) or message}"))
        return None
    return None if bad else rules


def _zh_limit(error: Any) -> str:
    """A pydantic range error said in Chinese ("" for other errors)."""
    ctx = error.get("ctx") or {}
    return {"less_than_equal": f"不能大于{ctx.get('le')}",
            "less_than": f"必须小于{ctx.get('lt')}",
            "greater_than_equal": f"不能小于{ctx.get('ge')}",
            "greater_than": f"必须大于{ctx.get('gt')}",
            "literal_error": "不是可选的值"}.get(error.get("type", ""), "")


def _check_calendar(session: Session, period: Period, cal: dict[str, date],
                    rules: CampaignRules | None, reasons: list[Why]) -> None:
    if len(cal) != len(CALENDAR_FIELDS):
        return  # unreadable dates were reported; ordering needs them all
    start, end = cal["starts_on"], cal["ends_on"]
    if not start < end:
        reasons.append(Why("calendar_order", f"the period must start before it ends "
                           f"({start} – {end})", f"开始日期（{start}）必须早于结束日期（{end}）"))
    for name in STAGE_DATES:
        if not start <= cal[name] <= end:
            zh, en = CALENDAR_LABELS[name]
            reasons.append(Why("outside_period", f"{en} ({cal[name]}) is outside the period "
                               f"({start} – {end})", f"{zh}（{cal[name]}）不在本时段"
                               f"（{start}至{end}）之内"))
    for a, b in zip(STAGE_DATES, STAGE_DATES[1:], strict=False):
        if not cal[a] < cal[b]:
            (za, ea), (zb, eb) = CALENDAR_LABELS[a], CALENDAR_LABELS[b]
            reasons.append(Why("calendar_order", f"{ea} ({cal[a]}) must be before {eb} "
                               f"({cal[b]})", f"{za}（{cal[a]}）必须早于{zb}（{cal[b]}）"))
    if rules is not None and cal["evaluation_due_on"] < cal["commendation_on"] and \
            cal["commendation_on"] - cal["evaluation_due_on"] < timedelta(days=rules.notice_days):
        reasons.append(Why("notice_does_not_fit",
                           f"the shortlist's {rules.notice_days}-day public notice must fit "
                           "between the evaluation deadline and the commendation day",
                           f"评议截止与表彰日期之间须留出{rules.notice_days}天的推荐名单公示期"))
    for other in session.scalars(sa.select(Period).where(
            Period.sequence.in_((period.sequence - 1, period.sequence + 1)))):
        if other.sequence < period.sequence and other.ends_on >= start:
            reasons.append(Why("overlaps", f"the period would overlap {other.code}, which ends "
                               f"on {other.ends_on}", f"与上一时段（{other.name_zh}，"
                               f"{other.ends_on}结束）重叠"))
        if other.sequence > period.sequence and other.starts_on <= end:
            reasons.append(Why("overlaps", f"the period would overlap {other.code}, which "
                               f"starts on {other.starts_on}", f"与下一时段（{other.name_zh}，"
                               f"{other.starts_on}开始）重叠"))


def update_period(session: Session, code: str, values: dict[str, str], *, actor: Actor,
                  now: datetime) -> dict[str, list[Any]]:
    """Save a period's calendar and rules from form values; returns the changes made
    (``{field: [old, new]}``, empty when nothing changed). Refuses with every reason."""
    period = get_period(session, code, lock=True)
    reasons: list[Why] = []
    if period.status == "closed":
        reasons.append(Why("period_closed", f"period {code} is closed; its calendar is history",
                           "该时段已结束，日程和规则不能再修改"))
    cal = _parse_calendar(values, reasons)
    rules = _parse_rules(values, reasons)
    _check_calendar(session, period, cal, rules, reasons)
    if reasons or rules is None:
        raise InvalidInput(f"period {code} was not saved", list(reasons))
    old = CampaignRules.model_validate(period.rules or {})
    # A ratio shown rounded (2/3 as 0.666667) and saved unchanged keeps its exact value.
    rules = rules.model_copy(update={name: getattr(old, name) for name in _FLOATS if math.isclose(
        getattr(rules, name), getattr(old, name), rel_tol=0, abs_tol=5e-7)})
    old_rules, new_rules = old.model_dump(mode="json"), rules.model_dump(mode="json")
    changes: dict[str, list[Any]] = {
        name: [getattr(period, name).isoformat(), cal[name].isoformat()]
        for name in CALENDAR_FIELDS if getattr(period, name) != cal[name]}
    changes |= {f"rules.{k}": [old_rules[k], v] for k, v in new_rules.items()
                if old_rules.get(k) != v}
    if not changes:
        return {}
    for name in CALENDAR_FIELDS:
        setattr(period, name, cal[name])
    period.rules = rules.model_dump(mode="json", exclude_defaults=True)
    history.append(session, history.EventDraft(
        action="period_updated", actor=actor, occurred_at=now, period_id=period.id,
        payload={"period": period.code, "changes": changes}))
    return changes


# --- criteria ----------------------------------------------------------------------------------

def _criterion_reasons(code: str, name_zh: str, name_en: str) -> list[Why]:
    reasons = []
    if not code or len(code) > 64 or not all(ch.isalnum() or ch in "._-" for ch in code):
        reasons.append(Why("bad_code", f"criterion code {code!r}: use 1–64 letters, digits, "
                           "'.', '_' or '-'", f"标准编码“{code}”无效：只能用字母、数字和 . _ -"))
    if not name_zh or not name_en or len(name_zh) > 200 or len(name_en) > 200:
        reasons.append(Why("missing_field", f"criterion {code!r} needs a Chinese and an English "
                           "name (at most 200 characters)", f"标准“{code}”须有中文和英文名称"))
    return reasons


def add_refined_set(session: Session, *, base_id: int, organization_id: int, name_zh: str,
                    name_en: str, criteria: list[tuple[str, str, str, str]], actor: Actor,
                    now: datetime) -> CriteriaSet:
    """A unit's refinement of a criteria set (``refines_id``): the base set's criteria, or
    the ``(code, name_zh, name_en, description_zh)`` lines given."""
    reasons: list[Why] = []
    base = session.get(CriteriaSet, base_id)
    org = session.get(Organization, organization_id)
    if base is None or base.refines_id is not None:
        reasons.append(Why("unknown_set", "choose one of the notice's criteria sets to refine",
                           "请选择要细化的标准体系（四强、四优或六个一）"))
    if org is None or org.kind not in UNIT_KINDS or not org.active:
        reasons.append(Why("unknown_unit", "choose an active unit", "请选择一个在册的基层单位"))
    if not name_zh.strip() or not name_en.strip():
        reasons.append(Why("missing_field", "the refined set needs a Chinese and an English name",
                           "细化标准须填写中文名称和英文名称"))
    codes = [c[0] for c in criteria]
    if len(set(codes)) != len(codes):
        reasons.append(Why("duplicate_code", "criterion codes repeat", "标准编码有重复"))
    for code, zh, en, _ in criteria:
        reasons += _criterion_reasons(code, zh, en)
    code = f"{base.code}.{org.code}" if base is not None and org is not None else ""
    if base is not None and org is not None and session.scalar(
            sa.select(CriteriaSet.id).where(CriteriaSet.code == code)):
        reasons.append(Why("duplicate_set", f"{org.name_en} already refines {base.name_en}",
                           f"{org.name_zh}已有{base.name_zh}的细化标准"))
    if reasons:
        raise InvalidInput("the refined criteria set was not added", reasons)
    assert base is not None and org is not None
    refined = CriteriaSet(code=code, name_zh=name_zh.strip(), name_en=name_en.strip(),
                          applies_to=base.applies_to, organization_id=org.id, refines_id=base.id)
    session.add(refined)
    session.flush()
    if not criteria:
        criteria = [(c.code, c.name_zh, c.name_en, c.description_zh) for c in session.scalars(
            sa.select(Criterion).where(Criterion.criteria_set_id == base.id)
            .order_by(Criterion.position, Criterion.id))]
    session.add_all([Criterion(criteria_set_id=refined.id, code=c, name_zh=zh, name_en=en,
                               description_zh=desc, position=n)
                     for n, (c, zh, en, desc) in enumerate(criteria)])
    history.append(session, history.EventDraft(
        action="criteria_set_added", actor=actor, occurred_at=now, payload={
            "criteria_set": code, "refines": base.code, "organization": org.code,
            "criteria": [c[0] for c in criteria]}))
    session.flush()
    return refined


def add_criterion(session: Session, *, set_id: int, code: str, name_zh: str, name_en: str,
                  description_zh: str, actor: Actor, now: datetime) -> Criterion:
    """Add a criterion to a unit's refined set (the notice's own sets are not edited)."""
    target = session.get(CriteriaSet, set_id)
    if target is None:
        raise NotFound(f"criteria set {set_id} not found")
    reasons = _criterion_reasons(code, name_zh, name_en)
    if target.refines_id is None:
        reasons.append(Why("not_refined", "the notice's own criteria sets are not edited "
                           "here; add a unit refinement",
                           "通知规定的标准体系不在此修改，请为单位添加细化标准"))
    if session.scalar(sa.select(Criterion.id).where(Criterion.criteria_set_id == set_id,
                                                    Criterion.code == code)):
        reasons.append(Why("duplicate_code", f"criterion {code!r} is already in the set",
                           f"该标准体系中已有编码“{code}”"))
    if reasons:
        raise InvalidInput("the criterion was not added", reasons)
    position = session.scalar(sa.select(sa.func.coalesce(sa.func.max(Criterion.position), -1))
                              .where(Criterion.criteria_set_id == set_id)) + 1
    criterion = Criterion(criteria_set_id=set_id, code=code, name_zh=name_zh, name_en=name_en,
                          description_zh=description_zh, position=position)
    session.add(criterion)
    history.append(session, history.EventDraft(
        action="criterion_added", actor=actor, occurred_at=now,
        payload={"criteria_set": target.code, "criterion": code}))
    session.flush()
    return criterion


# --- the commendation desk ---------------------------------------------------------------------

def ready_counts(session: Session, period: Period) -> tuple[int, int]:
    """(cases ready for selection, cases of the period still before it)."""
    ready = session.scalar(sa.select(sa.func.count()).select_from(Case).where(
        Case.period_id == period.id, Case.stage == "evaluation",
        Case.status.in_(selection_service.READY))) or 0
    before = session.scalar(sa.select(sa.func.count()).select_from(Case).where(
        Case.period_id == period.id, Case.stage.in_(("pledge", "review", "evaluation")))) or 0
    return ready, before - ready


def select_candidates(session: Session, code: str, *, include_unfinished: bool, actor: Actor,
                      clock: Clock) -> dict[str, Commendation]:
    """Run the period's selection (once per award). Cases still before the end of evaluation
    would be left out for good, so that needs saying yes to ``include_unfinished``."""
    period = get_period(session, code, lock=True)
    ready, unfinished = ready_counts(session, period)
    reasons = []
    if not ready:
        reasons.append(Why("nothing_ready", "no case has finished its evaluation yet",
                           "还没有完成群众评议的事项，无法评选"))
    elif unfinished and not include_unfinished:
        reasons.append(Why("unfinished", f"{unfinished} cases have not finished evaluation and "
                           "would not be candidates; confirm to select without them",
                           f"还有{unfinished}个事项未完成群众评议，评选后将不再参选；如确定，请勾选确认"))
    if reasons:
        raise TransitionRefused("the selection was not run", reasons)
    return selection_service.run_selection(
        session, period.id, CampaignRules.model_validate(period.rules or {}), actor=actor,
        clock=clock)


def _locked_selection(session: Session, commendation_id: int) -> Commendation:
    row = session.scalars(sa.select(Commendation).where(Commendation.id == commendation_id)
                          .with_for_update().execution_options(populate_existing=True)).first()
    if row is None:
        raise NotFound(f"commendation {commendation_id} not found")
    return row


def post_shortlist(session: Session, commendation_id: int, *, actor: Actor,
                   clock: Clock) -> None:
    """Put a selection's shortlist under public notice for the rules' notice days."""
    selection = _locked_selection(session, commendation_id)
    rules = CampaignRules.model_validate(selection.rules or {})
    selection_service.open_shortlist_notice(session, selection, actor=actor, clock=clock,
                                            notice_days=rules.notice_days)


def _nomination(session: Session, nomination_id: int) -> Nomination:
    row = session.get(Nomination, nomination_id)
    if row is None:
        raise NotFound(f"nomination {nomination_id} not found")
    return row


def adjust(session: Session, nomination_id: int, *, shortlisted: bool, rationale: str,
           actor: Actor, clock: Clock, expected_version: int | None = None) -> engine.Outcome:
    """Move a candidate onto or off the shortlist, with a rationale, through the choke point."""
    nomination = _nomination(session, nomination_id)
    return engine.apply(session, case_id=nomination.case_id, action="adjust_nomination",
                        actor=actor, clock=clock, expected_version=expected_version,
                        data={"shortlisted": shortlisted, "rationale": rationale})


def decide(session: Session, nomination_id: int, *, commend: bool, comment: str | None,
           actor: Actor, clock: Clock, expected_version: int | None = None) -> engine.Outcome:
    """Decide one candidate through the choke point; the selection is marked decided with
    its last case (same transaction)."""
    nomination = _nomination(session, nomination_id)
    outcome = engine.apply(session, case_id=nomination.case_id, action="decide", actor=actor,
                           clock=clock, comment=comment, expected_version=expected_version,
                           data=inputs.Decide(commend=commend))
    selection_service.finish_if_decided(
        session, _locked_selection(session, nomination.commendation_id), actor=actor,
        clock=clock)
    return outcome
