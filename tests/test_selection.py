"""Commendation selection: eligibility, ranking, quota, shortlist, configuration and recusal."""

from __future__ import annotations

import json

import pytest

from service.rules import CampaignRules
from service.selection import (
    Candidate,
    quota_for,
    recused,
    select,
    shortlist_size_for,
)
from service.tally import tally_round

RULES = CampaignRules()


def cand(
    case_id: int,
    satisfaction: float | None = 0.8,
    *,
    kind: str = "organization",
    unit_id: int | None = None,
    enterprise_id: int = 1,
    total: int = 3,
    kept: int | None = None,
) -> Candidate:
    """A candidate that is eligible under the default rules unless told otherwise."""
    return Candidate(
        case_id=case_id,
        subject_kind=kind,
        unit_id=case_id if unit_id is None else unit_id,
        enterprise_id=enterprise_id,
        satisfaction=satisfaction,
        pledge_items_total=total,
        pledge_items_kept=total if kept is None else kept,
        name=f"case {case_id}",
    )


def codes(ranked) -> list[str]:
    return [r.code for r in ranked.reasons]


def only(candidates, rules=RULES, kind="organization"):
    """The Selection for one kind."""
    return select(candidates, rules)[kind]


@pytest.mark.parametrize(
    ("satisfaction", "eligible"),
    [(0.60, True), (3 / 5, True), (0.7 * 6 / 7, True), (0.5999, False), (0.61, True), (0.0, False)],
)
def test_threshold_boundary(satisfaction: float, eligible: bool) -> None:
    (r,) = only([cand(1, satisfaction)]).ranked
    assert r.eligible is eligible
    assert ("below_threshold" in codes(r)) is not eligible


def test_inconclusive_round_is_ineligible_with_no_result() -> None:
    (r,) = only([cand(1, None)]).ranked
    assert (r.eligible, r.rank, r.shortlisted) == (False, None, False)
    assert codes(r) == ["no_result", "outside_shortlist"]


@pytest.mark.parametrize(("total", "kept"), [(3, 2), (3, 0), (0, 0)])
def test_pledge_not_kept_is_ineligible(total: int, kept: int) -> None:
    (r,) = only([cand(1, 0.95, total=total, kept=kept)]).ranked
    assert not r.eligible
    assert codes(r) == ["pledge_not_kept", "outside_shortlist"]
    assert f"{kept} of {total}" in r.reasons[0].message_en


def test_every_ineligibility_reason_is_listed_first() -> None:
    (r,) = only([cand(1, 0.4, total=2, kept=1)]).ranked
    assert codes(r) == ["below_threshold", "pledge_not_kept", "outside_shortlist"]
    assert "40.0%" in r.reasons[0].message_en and "40.0%" in r.reasons[0].message_zh


def test_ranking_breaks_ties_by_kept_ratio_then_case_id() -> None:
    rules = CampaignRules(require_pledge_kept=False)
    pool = [
        cand(7, 0.9, total=4, kept=3),
        cand(3, 0.9, total=4, kept=3),
        cand(5, 0.9, total=2, kept=2),
        cand(9, 0.95, total=5, kept=1),
        cand(2, 0.7),
    ]
    order = [r.candidate.case_id for r in only(pool, rules).ranked]
    assert order == [9, 5, 3, 7, 2]
    assert order == [r.candidate.case_id for r in only(list(reversed(pool)), rules).ranked]


def test_eligible_in_rank_order_then_ineligible_by_case_id() -> None:
    pool = [cand(4, None), cand(1, 0.7), cand(3, 0.2), cand(2, 0.9)]
    s = only(pool)
    assert [(r.candidate.case_id, r.rank) for r in s.ranked] == [
        (2, 1), (1, 2), (3, None), (4, None),
    ]


@pytest.mark.parametrize(
    ("pool_size", "ratio", "quota"),
    [
        (8, 0.2, 2),  # 1.6 -> 2
        (2, 0.2, 1),  # 0.4 rounds to 0, but a non-empty pool gets at least 1
        (0, 0.2, 0),
        (1, 0.2, 1),
        (12, 0.2, 2),  # 2.4 -> 2
        (13, 0.2, 3),  # 2.6 -> 3
        (25, 0.1, 3),  # 2.5 rounds half up (Python's round() would give 2)
        (15, 0.1, 2),
        (4, 1.0, 4),
    ],
)
def test_quota_rounding(pool_size: int, ratio: float, quota: int) -> None:
    assert quota_for(pool_size, CampaignRules(quota_ratio=ratio)) == quota


@pytest.mark.parametrize(
    ("quota", "ratio", "size"),
    [
        (5, 1.2, 6),  # the 1:1.2 of the notices
        (1, 1.2, 2),
        (2, 1.2, 3),
        (3, 1.2, 4),  # 3.5999999999999996 -> 4
        (0, 1.2, 0),
        (4, 1.0, 4),
        (50, 1.1, 55),  # 55.00000000000001 must not become 56
    ],
)
def test_shortlist_size(quota: int, ratio: float, size: int) -> None:
    assert shortlist_size_for(quota, CampaignRules(candidate_ratio=ratio)) == size


def test_negative_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        quota_for(-1, RULES)
    with pytest.raises(ValueError):
        shortlist_size_for(-1, RULES)


def test_shortlist_takes_the_best_ranked() -> None:
    # 10 cases -> quota 2 -> shortlist 3.
    s = only([cand(i, 0.6 + i / 100) for i in range(1, 11)])
    assert (s.pool_size, s.quota, s.shortlist_size) == (10, 2, 3)
    assert [r.candidate.case_id for r in s.ranked if r.shortlisted] == [10, 9, 8]
    assert codes(s.ranked[2]) == ["within_shortlist"]
    assert codes(s.ranked[3]) == ["outside_shortlist"]
    assert [r.rank for r in s.ranked] == list(range(1, 11))


def test_fewer_eligible_than_shortlist_places() -> None:
    pool = [cand(1, 0.9), cand(2, 0.65)] + [cand(i, 0.3) for i in range(3, 11)]
    s = only(pool)
    assert (s.quota, s.shortlist_size) == (2, 3)
    assert [r.candidate.case_id for r in s.ranked if r.shortlisted] == [1, 2]
    assert sum(r.eligible for r in s.ranked) == 2


def test_organizations_and_members_are_selected_separately() -> None:
    orgs = [cand(i, 0.7) for i in range(1, 6)]  # pool 5 -> quota 1 -> shortlist 2
    members = [cand(100 + i, 0.99, kind="member") for i in range(10)]  # quota 2 -> shortlist 3
    result = select(members + orgs, RULES)
    assert set(result) == {"organization", "member"}
    org, mem = result["organization"], result["member"]
    assert (org.pool_size, org.quota, org.shortlist_size) == (5, 1, 2)
    assert (mem.pool_size, mem.quota, mem.shortlist_size) == (10, 2, 3)
    assert [r.candidate.case_id for r in org.ranked if r.shortlisted] == [1, 2]
    assert [r.candidate.case_id for r in mem.ranked if r.shortlisted] == [100, 101, 102]
    assert all(r.candidate.subject_kind == "member" for r in mem.ranked)


def test_empty_kind_has_no_quota() -> None:
    s = select([cand(1)], RULES)["member"]
    assert (s.pool_size, s.quota, s.shortlist_size, s.ranked) == (0, 0, 0, ())


def test_scale_changes_the_outcome() -> None:
    """The middle answers count as satisfied on the four-level scale, not on the three-level."""
    criteria = ("political_leadership",)
    four = ["satisfied"] * 2 + ["fairly_satisfied"] * 2 + ["dissatisfied"]
    three = ["satisfied"] * 2 + ["average"] * 2 + ["dissatisfied"]
    outcomes = []
    for scale, answers in (("four_level", four), ("three_level", three)):
        rules = CampaignRules(scale=scale)
        ballots = [{criteria[0]: a} for a in answers]
        t = tally_round(assigned=5, ballots=ballots, criteria=criteria, rules=rules)
        (r,) = only([cand(1, t.overall_satisfaction)], rules).ranked
        outcomes.append((t.overall_satisfaction, r.eligible))
    assert outcomes == [(0.8, True), (0.4, False)]


def test_not_requiring_kept_pledges_makes_them_eligible() -> None:
    pool = [cand(1, 0.9, total=3, kept=1), cand(2, 0.8, total=0, kept=0)]
    assert [r.eligible for r in only(pool).ranked] == [False, False]
    relaxed = only(pool, CampaignRules(require_pledge_kept=False))
    assert [(r.candidate.case_id, r.rank) for r in relaxed.ranked] == [(1, 1), (2, 2)]


@pytest.mark.parametrize(
    ("overrides", "quota", "size", "shortlisted"),
    [
        ({}, 1, 2, [4, 3]),
        ({"quota_ratio": 0.5}, 2, 3, [4, 3, 2]),
        ({"candidate_ratio": 1.0}, 1, 1, [4]),
        ({"satisfaction_threshold": 0.75}, 1, 2, [4, 3]),  # 0.75 is at the bar
        ({"satisfaction_threshold": 0.76}, 1, 2, [4]),
    ],
)
def test_custom_rules_change_the_outcome(overrides, quota, size, shortlisted) -> None:
    pool = [cand(i, 0.6 + i / 20) for i in range(1, 5)]  # 0.65, 0.70, 0.75, 0.80
    s = only(pool, CampaignRules(**overrides))
    assert (s.quota, s.shortlist_size) == (quota, size)
    assert [r.candidate.case_id for r in s.ranked if r.shortlisted] == shortlisted


@pytest.mark.parametrize(
    "candidate",
    [
        cand(1, kind="unknown"),
        cand(1, total=2, kept=3),
        cand(1, total=2, kept=-1),
    ],
)
def test_invalid_candidates_are_refused(candidate: Candidate) -> None:
    with pytest.raises(ValueError):
        select([candidate], RULES)


def test_duplicate_case_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        select([cand(1), cand(1, kind="member")], RULES)


def test_as_dict_is_json() -> None:
    data = json.loads(json.dumps(only([cand(1, 2 / 3), cand(2, None)]).as_dict()))
    assert (data["pool_size"], data["quota"], data["shortlist_size"]) == (2, 1, 2)
    first, second = data["ranked"]
    assert first["case_id"] == 1 and first["satisfaction"] == 0.6667 and first["rank"] == 1
    assert first["shortlisted"] is True
    assert [r["code"] for r in first["reasons"]] == ["within_shortlist"]
    assert second["satisfaction"] is None and second["eligible"] is False
    assert {"code", "message_en", "message_zh"} == set(second["reasons"][0])


@pytest.mark.parametrize(
    ("units", "enterprises", "unit_id", "enterprise_id", "expected"),
    [
        ({10}, {1}, 10, 1, "own unit"),  # the candidate's own branch
        ({11}, {1}, 10, 1, "own enterprise"),  # another branch of the same enterprise
        ({11, 12}, set(), 12, 2, "own unit"),
        ({11}, {2, 3}, 10, 3, "own enterprise"),
        ({11}, {2}, 10, 1, None),
        (set(), set(), 10, 1, None),  # e.g. the campaign office
    ],
)
def test_recusal(units, enterprises, unit_id, enterprise_id, expected) -> None:
    candidate = cand(1, unit_id=unit_id, enterprise_id=enterprise_id, kind="member")
    reason = recused(units, enterprises, candidate)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.code == "recusal"
        assert expected in reason.message_en and reason.message_zh
