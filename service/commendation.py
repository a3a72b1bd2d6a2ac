"""Selection and commendation across a period (评选表彰).

Unlike the other steps this one is a selection: every case of the period is ranked against the
others. ``run_selection`` computes it with the pure ``service.selection`` functions, stores the
result (one ``Commendation`` per award, a ``Nomination`` per case) and moves every case into the
commendation stage through the choke point. ``open_shortlist_notice`` posts the shortlists;
each case is then decided by the campaign office with ``engine.apply(..., "decide")``.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    Case,
    Commendation,
    EvaluationRound,
    Nomination,
    Organization,
    Pledge,
    PledgeItem,
    PublicNotice,
)
from models.commendation import AWARDS
from service import selection
from service.clock import Clock
from service.errors import Reason, TransitionRefused
from service.rules import CampaignRules
from service.workflow import engine
from service.workflow.roles import Actor

__all__ = ["run_selection", "open_shortlist_notice", "candidates_for"]

READY = ("announced", "inconclusive")


def candidates_for(session: Session, period_id: int) -> list[selection.Candidate]:
    """Every case of the period that finished evaluation, with what selection needs."""
    kept = sa.func.sum(sa.case((PledgeItem.fulfilment == "kept", 1), else_=0))
    items = (sa.select(Pledge.case_id, sa.func.count(PledgeItem.id).label("total"),
                       kept.label("kept"))
             .join(PledgeItem, PledgeItem.pledge_id == Pledge.id).group_by(Pledge.case_id)
             .subquery())
    rows = session.execute(
        sa.select(Case, Organization.path, EvaluationRound.tally, items.c.total, items.c.kept)
        .join(Organization, Organization.id == Case.organization_id)
        .outerjoin(EvaluationRound, EvaluationRound.case_id == Case.id)
        .outerjoin(items, items.c.case_id == Case.id)
        .where(Case.period_id == period_id, Case.stage == "evaluation", Case.status.in_(READY))
        .order_by(Case.id)).all()
    out = []
    for case, path, tally, total, kept_n in rows:
        parts = [int(p) for p in path.strip("/").split("/") if p]
        satisfied = tally.get("overall_satisfaction") if (
            tally and case.status == "announced") else None
        out.append(selection.Candidate(
            case_id=case.id, subject_kind=case.subject_kind, unit_id=case.organization_id,
            enterprise_id=parts[1] if len(parts) > 1 else parts[0], satisfaction=satisfied,
            pledge_items_total=int(total or 0), pledge_items_kept=int(kept_n or 0)))
    return out


def run_selection(session: Session, period_id: int, rules: CampaignRules, *, actor: Actor,
                  clock: Clock) -> dict[str, Commendation]:
    """Rank every finished case, store the shortlists and move the cases on. Once per award."""
    done = set(session.scalars(sa.select(Commendation.award)
                               .where(Commendation.period_id == period_id)))
    result = selection.select(candidates_for(session, period_id), rules)
    made: dict[str, Commendation] = {}
    for kind, sel in result.items():
        award = AWARDS[kind]
        if award in done or not sel.ranked:
            continue
        commendation = Commendation(period_id=period_id, award=award, pool_size=sel.pool_size,
                                    quota=sel.quota, shortlist_size=sel.shortlist_size,
                                    rules=rules.model_dump(mode="json"), selected_at=clock.now())
        session.add(commendation)
        session.flush()
        session.add_all([Nomination(
            commendation_id=commendation.id, case_id=r.candidate.case_id, eligible=r.eligible,
            rank=r.rank, satisfaction=r.candidate.satisfaction, shortlisted=r.shortlisted,
            reasons=[{"code": x.code, "en": x.message_en, "zh": x.message_zh}
                     for x in r.reasons]) for r in sel.ranked])
        session.flush()
        for r in sel.ranked:
            engine.apply(session, case_id=r.candidate.case_id, action="nominate", actor=actor,
                         clock=clock)
        made[award] = commendation
    return made


def open_shortlist_notice(session: Session, commendation: Commendation, *, actor: Actor,
                          clock: Clock, notice_days: int) -> PublicNotice:
    """Post the shortlist for public notice; every case of the selection waits on it."""
    if commendation.status != "selected":
        raise TransitionRefused("the shortlist is already posted", [
            Reason("already_posted", f"commendation {commendation.id} is {commendation.status}")])
    now = clock.now()
    notice = PublicNotice(subject="shortlist", commendation_id=commendation.id, starts_at=now,
                          ends_at=now + timedelta(days=notice_days))
    session.add(notice)
    commendation.status = "under_notice"
    session.flush()
    case_ids = session.scalars(sa.select(Nomination.case_id).where(
        Nomination.commendation_id == commendation.id).order_by(Nomination.case_id)).all()
    for case_id in case_ids:
        engine.apply(session, case_id=case_id, action="open_shortlist_notice", actor=actor,
                     clock=clock)
    return notice


def finish_if_decided(session: Session, commendation: Commendation, *, actor: Actor,
                      clock: Clock) -> bool:
    """Mark the selection decided once every case in it is closed; close its notice."""
    open_left = session.scalar(sa.select(sa.func.count()).select_from(Nomination)
                               .join(Case, Case.id == Nomination.case_id)
                               .where(Nomination.commendation_id == commendation.id,
                                      Case.stage != "closed"))
    if open_left or commendation.status == "decided":
        return False
    commendation.status, commendation.decided_at = "decided", clock.now()
    commendation.decided_by_id = actor.person_id
    session.execute(sa.update(PublicNotice).where(
        PublicNotice.commendation_id == commendation.id, PublicNotice.status == "open")
        .values(status="closed"))
    return True
