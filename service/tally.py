"""Evaluation tally: counting the ballots of one mass-evaluation round (群众评议).

A round has a number of *assigned* evaluators (党员代表 / 职工代表); each one who votes casts a
ballot that maps criterion codes (e.g. the 四强 items for a unit) to an option code on the
period's scale (``rules.ballot_scale``: four levels 满意/比较满意/基本满意/不满意 or three
levels 满意/一般/不满意).

Rules, all driven by :class:`~service.rules.CampaignRules`:

- A ballot may leave a criterion unanswered: that is an abstention on that item. It still
  counts as cast (turnout), but adds nothing to that item's counts.
- An answer counts as *satisfied* when its scale option has ``satisfied=True``; which options
  those are is configuration (on the four-level scale 满意, 比较满意 and 基本满意 do; on the
  three-level scale only 满意).
- A criterion's satisfaction rate is satisfied answers / answers on that item (None when
  nobody answered it). The overall rate pools the answers of all items.
- Participation is cast / assigned; the round counts (``quorum_reached``) when participation
  is at least ``rules.quorum`` and at least one ballot was cast. Exactly at quorum counts.
- Unknown criterion or option codes are refused with ``ValueError``, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.rules import CampaignRules

__all__ = ["CriterionResult", "Tally", "tally_round", "tally_counts", "validate_ballot",
           "disclosable"]

# Compare shares after rounding away float noise, so 2/3 turnout meets a 2/3 quorum.
_PRECISION = 9


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class CriterionResult:
    """Vote counts and satisfaction rate for one criterion of a round."""

    criterion: str
    counts: dict[str, int]
    answered: int
    satisfaction_rate: float | None

    def as_dict(self) -> dict:
        """Plain JSON-serialisable data, rate rounded to 4 decimals."""
        return {
            "criterion": self.criterion,
            "counts": dict(self.counts),
            "answered": self.answered,
            "satisfaction_rate": _round4(self.satisfaction_rate),
        }


@dataclass(frozen=True)
class Tally:
    """The result of one evaluation round."""

    assigned: int
    cast: int
    participation: float
    quorum_reached: bool
    criteria: tuple[CriterionResult, ...]
    overall_satisfaction: float | None

    def as_dict(self) -> dict:
        """Plain JSON-serialisable data (stored in a JSON column, shown by the API)."""
        return {
            "assigned": self.assigned,
            "cast": self.cast,
            "participation": round(self.participation, 4),
            "quorum_reached": self.quorum_reached,
            "overall_satisfaction": _round4(self.overall_satisfaction),
            "criteria": [c.as_dict() for c in self.criteria],
        }


def validate_ballot(
    answers: Mapping[str, str], criteria: Sequence[str], rules: CampaignRules
) -> list[str]:
    """List the problems of one ballot in plain English; an empty list means it is valid.

    Problems: a criterion not in ``criteria``, an option not on the period's scale, or no
    answer at all (a ballot must answer at least one item; single items may be left blank).
    """
    scale = rules.ballot_scale
    known = set(criteria)
    problems: list[str] = []
    if not answers:
        problems.append("The ballot has no answers; answer at least one criterion.")
    for criterion, option in answers.items():
        if criterion not in known:
            problems.append(
                f"Unknown criterion {criterion!r}; expected one of: {', '.join(criteria)}."
            )
        if not isinstance(option, str) or scale.option(option) is None:
            codes = ", ".join(o.code for o in scale.options)
            problems.append(
                f"Criterion {criterion!r}: unknown option {option!r} on the {scale.code} "
                f"scale; expected one of: {codes}."
            )
    return problems


def tally_round(
    *,
    assigned: int,
    ballots: Sequence[Mapping[str, str]],
    criteria: Sequence[str],
    rules: CampaignRules,
) -> Tally:
    """Count the ballots of a round into per-criterion results and an overall rate.

    Raises ``ValueError`` if ``assigned`` is negative, more ballots were cast than evaluators
    assigned, ``criteria`` repeats a code, or a ballot names an unknown criterion or option.
    """
    if assigned < 0:
        raise ValueError(f"assigned must not be negative, got {assigned}")
    cast = len(ballots)
    if cast > assigned:
        raise ValueError(f"{cast} ballots cast but only {assigned} evaluators assigned")
    if len(set(criteria)) != len(criteria):
        raise ValueError(f"criteria must not repeat a code: {list(criteria)}")

    scale = rules.ballot_scale
    counts = {c: {o.code: 0 for o in scale.options} for c in criteria}
    for index, ballot in enumerate(ballots, start=1):
        for criterion, option in ballot.items():
            if criterion not in counts:
                raise ValueError(f"ballot {index}: unknown criterion {criterion!r}")
            if not isinstance(option, str) or scale.option(option) is None:
                raise ValueError(
                    f"ballot {index}, criterion {criterion!r}: option {option!r} "
                    f"is not on the {scale.code} scale"
                )
            counts[criterion][option] += 1
    return tally_counts(assigned=assigned, cast=cast, counts=counts, criteria=criteria,
                        rules=rules)


def tally_counts(
    *,
    assigned: int,
    cast: int,
    counts: Mapping[str, Mapping[str, int]],
    criteria: Sequence[str],
    rules: CampaignRules,
) -> Tally:
    """Count a round from its ballot box: per criterion, how many chose each option.

    This is how rounds are stored (no ballot is kept as a row, so none can be traced back to
    its voter); ``cast`` comes from the receipts. Raises ``ValueError`` for unknown criteria or
    options, negative counts, or a criterion answered more often than ballots were cast.
    """
    if assigned < 0 or cast < 0:
        raise ValueError(f"assigned and cast must not be negative, got {assigned}, {cast}")
    if cast > assigned:
        raise ValueError(f"{cast} ballots cast but only {assigned} evaluators assigned")
    if len(set(criteria)) != len(criteria):
        raise ValueError(f"criteria must not repeat a code: {list(criteria)}")
    scale = rules.ballot_scale
    unknown = set(counts) - set(criteria)
    if unknown:
        raise ValueError(f"unknown criteria in the counts: {sorted(unknown)}")
    full: dict[str, dict[str, int]] = {c: {o.code: 0 for o in scale.options} for c in criteria}
    for criterion, per_option in counts.items():
        for option, n in per_option.items():
            if scale.option(option) is None:
                raise ValueError(f"option {option!r} is not on the {scale.code} scale")
            if n < 0:
                raise ValueError(f"negative count for {criterion}/{option}")
            full[criterion][option] = n
        if sum(full[criterion].values()) > cast:
            raise ValueError(f"criterion {criterion!r} answered more often than ballots cast")
    counts = full

    satisfied_codes = {o.code for o in scale.options if o.satisfied}
    results = []
    total_answered = total_satisfied = 0
    for criterion in criteria:
        item_counts = counts[criterion]
        answered = sum(item_counts.values())
        satisfied = sum(n for code, n in item_counts.items() if code in satisfied_codes)
        total_answered += answered
        total_satisfied += satisfied
        results.append(
            CriterionResult(
                criterion=criterion,
                counts=item_counts,
                answered=answered,
                satisfaction_rate=satisfied / answered if answered else None,
            )
        )

    participation = cast / assigned if assigned else 0.0
    return Tally(
        assigned=assigned,
        cast=cast,
        participation=participation,
        quorum_reached=cast > 0
        and round(participation, _PRECISION) >= round(rules.quorum, _PRECISION),
        criteria=tuple(results),
        overall_satisfaction=total_satisfied / total_answered if total_answered else None,
    )


def disclosable(tally: Mapping[str, Any] | None, min_ballots: int) -> dict[str, Any] | None:
    """What of a stored tally may be shown: all of it, or — when fewer than ``min_ballots``
    were cast, so that rates would reveal individual votes — only participation."""
    if tally is None:
        return None
    if int(tally.get("cast", 0)) >= min_ballots:
        return dict(tally)
    keep = ("assigned", "cast", "participation", "quorum_reached")
    return {**{k: tally.get(k) for k in keep}, "withheld": "too_few_ballots"}
