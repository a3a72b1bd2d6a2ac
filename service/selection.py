"""Commendation selection (评选表彰): eligibility, ranking, quota and shortlist.

Organizations (先进基层党组织) and members (优秀共产党员) are selected separately, each kind
against its own pool. All numbers come from :class:`~service.rules.CampaignRules`:

- **Eligible** when the evaluation gave a conclusive overall satisfaction of at least
  ``satisfaction_threshold`` (exactly at the threshold counts), and, if
  ``require_pledge_kept``, the case had pledge items and kept every one of them.
- **Ranking** among the eligible: satisfaction descending, then share of pledge items kept
  descending, then ``case_id`` ascending, so equal candidates always come out in the same order.
- **Quota**: ``pool_size * quota_ratio`` rounded half up, at least 1 for a non-empty pool.
  The pool is every candidate of that kind, eligible or not ("quotas allocated by number of
  units and members").
- **Shortlist**: ``ceil(quota * candidate_ratio)`` (about 1:1.2), filled by the best-ranked
  eligible candidates; it is shorter when fewer are eligible. The shortlist then goes under
  public notice before the decision.

Every candidate carries the reasons for its outcome, with stable codes: ``no_result``,
``below_threshold``, ``pledge_not_kept`` (ineligibility), ``within_shortlist``,
``outside_shortlist``, and ``recusal`` (see :func:`recused`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

from service.rules import CampaignRules

__all__ = ["Candidate", "Reason", "Ranked", "Selection", "SUBJECT_KINDS", "quota_for",
           "shortlist_size_for", "select", "recused"]

SUBJECT_KINDS = ("organization", "member")
_PRECISION = 9  # round away float noise (5 * 1.2 == 6.000000000000001) before ceil/compare


@dataclass(frozen=True)
class Candidate:
    """One nominated case: an organization or a member, with its evaluation and pledge result."""

    case_id: int
    subject_kind: str
    unit_id: int
    enterprise_id: int
    satisfaction: float | None
    pledge_items_total: int
    pledge_items_kept: int
    name: str = ""

    @property
    def kept_ratio(self) -> float:
        """Share of pledge items kept (0.0 with no items)."""
        return self.pledge_items_kept / self.pledge_items_total if self.pledge_items_total else 0.0


@dataclass(frozen=True)
class Reason:
    """Why a candidate got its outcome: a stable code plus English and Chinese text."""

    code: str
    message_en: str
    message_zh: str


@dataclass(frozen=True)
class Ranked:
    """A candidate's outcome: eligibility, rank among the eligible, shortlist place, reasons."""

    candidate: Candidate
    eligible: bool
    rank: int | None
    shortlisted: bool
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Selection:
    """The outcome for one subject kind: quota, shortlist size and every candidate ranked."""

    subject_kind: str
    pool_size: int
    quota: int
    shortlist_size: int
    ranked: tuple[Ranked, ...]

    def as_dict(self) -> dict:
        """Plain JSON-serialisable data, satisfaction rounded to 4 decimals."""
        rows = [
            {
                **asdict(r.candidate),
                "satisfaction": None if r.candidate.satisfaction is None
                else round(r.candidate.satisfaction, 4),
                "eligible": r.eligible,
                "rank": r.rank,
                "shortlisted": r.shortlisted,
                "reasons": [asdict(reason) for reason in r.reasons],
            }
            for r in self.ranked
        ]
        return {
            "subject_kind": self.subject_kind,
            "pool_size": self.pool_size,
            "quota": self.quota,
            "shortlist_size": self.shortlist_size,
            "ranked": rows,
        }


def quota_for(pool_size: int, rules: CampaignRules) -> int:
    """Awards for a pool: ``pool_size * quota_ratio`` rounded half up, min 1 (0 if empty)."""
    if pool_size < 0:
        raise ValueError(f"pool_size must not be negative, got {pool_size}")
    if pool_size == 0:
        return 0
    return max(1, math.floor(round(pool_size * rules.quota_ratio, _PRECISION) + 0.5))


def shortlist_size_for(quota: int, rules: CampaignRules) -> int:
    """Shortlist places for a quota: ``ceil(quota * candidate_ratio)``, e.g. 5 -> 6 at 1.2."""
    if quota < 0:
        raise ValueError(f"quota must not be negative, got {quota}")
    return math.ceil(round(quota * rules.candidate_ratio, _PRECISION))


def _ineligibility(c: Candidate, rules: CampaignRules) -> list[Reason]:
    reasons = []
    if c.satisfaction is None:
        reasons.append(Reason(
            "no_result",
            "No conclusive evaluation result (round below quorum or not tallied).",
            "群众评议无有效结果（参评人数未达要求或未统计）。",
        ))
    elif round(c.satisfaction, _PRECISION) < round(rules.satisfaction_threshold, _PRECISION):
        reasons.append(Reason(
            "below_threshold",
            f"Overall satisfaction {c.satisfaction:.1%} is below the required "
            f"{rules.satisfaction_threshold:.1%}.",
            f"综合满意率{c.satisfaction:.1%}，低于{rules.satisfaction_threshold:.1%}的要求。",
        ))
    if rules.require_pledge_kept and (
        c.pledge_items_total == 0 or c.pledge_items_kept < c.pledge_items_total
    ):
        reasons.append(Reason(
            "pledge_not_kept",
            f"Pledge items kept: {c.pledge_items_kept} of {c.pledge_items_total}; "
            "all pledge items must be kept.",
            f"承诺事项兑现{c.pledge_items_kept}项（共{c.pledge_items_total}项），须全部兑现。",
        ))
    return reasons


def _select_kind(kind: str, pool: list[Candidate], rules: CampaignRules) -> Selection:
    quota = quota_for(len(pool), rules)
    size = shortlist_size_for(quota, rules)
    checked = [(c, _ineligibility(c, rules)) for c in pool]
    eligible = sorted(
        (c for c, why in checked if not why),
        key=lambda c: (-c.satisfaction, -c.kept_ratio, c.case_id),
    )
    outside = Reason(
        "outside_shortlist",
        f"Not among the {size} shortlist places (quota {quota}).",
        f"未进入推荐名单（名额{quota}个，推荐{size}人/个）。",
    )
    ranked = []
    for rank, c in enumerate(eligible, start=1):
        on_list = rank <= size
        within = Reason(
            "within_shortlist",
            f"Ranked {rank}, within the {size} shortlist places (quota {quota}).",
            f"排名第{rank}，进入推荐名单（名额{quota}个，推荐{size}人/个）。",
        )
        ranked.append(Ranked(c, True, rank, on_list, (within if on_list else outside,)))
    for c, why in sorted((x for x in checked if x[1]), key=lambda x: x[0].case_id):
        ranked.append(Ranked(c, False, None, False, (*why, outside)))
    return Selection(kind, len(pool), quota, size, tuple(ranked))


def select(candidates: Sequence[Candidate], rules: CampaignRules) -> dict[str, Selection]:
    """Rank and shortlist candidates, separately per subject kind.

    Returns one :class:`Selection` per kind in ``SUBJECT_KINDS`` (an empty pool gives quota 0).
    Raises ``ValueError`` for an unknown subject kind, a repeated ``case_id`` or impossible
    pledge counts.
    """
    seen: set[int] = set()
    for c in candidates:
        if c.subject_kind not in SUBJECT_KINDS:
            raise ValueError(f"case {c.case_id}: unknown subject_kind {c.subject_kind!r}")
        if not 0 <= c.pledge_items_kept <= c.pledge_items_total:
            raise ValueError(f"case {c.case_id}: pledge items kept must be between 0 and total")
        if c.case_id in seen:
            raise ValueError(f"case {c.case_id} appears more than once")
        seen.add(c.case_id)
    return {
        kind: _select_kind(kind, [c for c in candidates if c.subject_kind == kind], rules)
        for kind in SUBJECT_KINDS
    }


def recused(
    decider_unit_ids: Collection[int],
    decider_enterprise_ids: Collection[int],
    candidate: Candidate,
) -> Reason | None:
    """Return a ``recusal`` reason if the decider must not decide on this candidate, else None.

    Separation of duties: nobody decides on their own unit's nomination. A decider belonging to
    the candidate's own unit, or to the same enterprise (the Party committee under the campaign
    office that the candidate belongs to), has an interest in the outcome, so the decision must
    go to someone outside it. Returning a reason (rather than a bare bool) lets the refusal be
    shown and recorded.
    """
    if candidate.unit_id in decider_unit_ids:
        en, zh = "unit", "单位"
    elif candidate.enterprise_id in decider_enterprise_ids:
        en, zh = "enterprise", "企业"
    else:
        return None
    return Reason(
        "recusal",
        f"You belong to the candidate's own {en} and must recuse yourself.",
        f"您与候选对象属同一{zh}，应当回避。",
    )
