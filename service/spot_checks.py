"""Spot checks (随机抽查): the campaign office draws units at random and records findings.

A draw is reproducible: ``random.Random(seed).sample`` over the period's active units sorted
by id, from a fresh recorded seed (``secrets.token_hex``). The event ``spot_check_drawn`` keeps
seed, population and result, so anyone can re-check the draw later (``redraw``). Functions
take a session and never commit.
"""

from __future__ import annotations

import random
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Case, Organization, Period, SpotCheck
from service import history
from service.errors import InvalidInput, NotFound
from service.office import Why
from service.periods import UNIT_KINDS
from service.workflow.roles import Actor

__all__ = ["FINDING_RESULTS", "population", "redraw", "draw", "record_finding"]


FINDING_RESULTS = {"satisfactory": ("符合要求", "Satisfactory"),
                   "rectify": ("限期整改", "Rectification required")}


def population(session: Session, period: Period) -> list[int]:
    """The units a draw is made from: active units with a case of their own in the period,
    by id (so the same seed always draws the same units)."""
    return list(session.scalars(
        sa.select(Organization.id).join(Case, Case.organization_id == Organization.id)
        .where(Case.period_id == period.id, Case.subject_kind == "organization",
               Organization.active.is_(True), Organization.kind.in_(UNIT_KINDS))
        .distinct().order_by(Organization.id)))


def redraw(units: list[int], seed: str, n: int) -> list[int]:
    """The draw a seed gives: ``random.Random(seed).sample(sorted(units), n)``."""
    return random.Random(seed).sample(sorted(units), n)


def draw(session: Session, period: Period, n: int, *, actor: Actor, now: datetime,
         seed: str | None = None) -> SpotCheck:
    """Draw ``n`` units at random from a recorded seed; the event keeps the population too,
    so anyone can re-check the draw later."""
    units = population(session, period)
    if not units:
        raise InvalidInput("nothing to draw from", [Why(
            "no_units", "the period has no unit cases yet (open it first)",
            "本时段还没有单位事项（请先开启时段）")])
    if not 1 <= n <= len(units):
        raise InvalidInput("bad sample size", [Why(
            "bad_sample_size", f"draw between 1 and {len(units)} units",
            f"抽查数量须在1到{len(units)}之间")])
    seed = seed or secrets.token_hex(16)
    drawn = redraw(units, seed, n)
    check = SpotCheck(period_id=period.id, drawn_at=now, drawn_by_id=actor.person_id, seed=seed,
                      organization_ids=drawn, findings={})
    session.add(check)
    session.flush()
    history.append(session, history.EventDraft(
        action="spot_check_drawn", actor=actor, occurred_at=now, period_id=period.id,
        payload={"spot_check": check.id, "seed": seed, "n": n, "population": units,
                 "drawn": drawn}))
    return check


def record_finding(session: Session, check_id: int, organization_id: int, *, result: str,
                   note: str, actor: Actor, now: datetime) -> SpotCheck:
    """Record (or correct) the finding on one drawn unit; the history keeps every version."""
    check = session.scalars(sa.select(SpotCheck).where(SpotCheck.id == check_id)
                            .with_for_update()).first()
    if check is None:
        raise NotFound(f"spot check {check_id} not found")
    reasons = []
    if organization_id not in check.organization_ids:
        reasons.append(Why("not_drawn", "that unit was not drawn in this spot check",
                           "该单位不在本次抽查名单中"))
    if result not in FINDING_RESULTS:
        reasons.append(Why("bad_result", "choose a result", "请选择抽查结论"))
    if not note.strip() or len(note) > 4000:
        reasons.append(Why("note_required", "describe what was found (at most 4000 characters)",
                           "请填写抽查发现的情况（不超过4000字）"))
    if reasons:
        raise InvalidInput("the finding was not recorded", reasons)
    entry = {"result": result, "note": note.strip(), "recorded_at": now.isoformat(),
             "recorded_by": actor.person_id}
    check.findings = {**check.findings, str(organization_id): entry}
    history.append(session, history.EventDraft(
        action="spot_check_finding", actor=actor, occurred_at=now, period_id=check.period_id,
        comment=note.strip(), payload={"spot_check": check.id, "organization": organization_id,
                                       "result": result}))
    session.flush()
    return check
