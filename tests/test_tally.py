"""Evaluation tally: counts, rates, abstentions, quorum and refusal of bad input."""

from __future__ import annotations

import json

import pytest

from service.rules import CampaignRules
from service.tally import CriterionResult, tally_round, validate_ballot

FOUR = CampaignRules()  # four_level is the default
THREE = CampaignRules(scale="three_level")
CRITERIA = ("political_leadership", "development_drive")
A, B = CRITERIA


def test_four_level_counts_and_rates_by_hand() -> None:
    ballots = [
        {A: "satisfied", B: "dissatisfied"},
        {A: "fairly_satisfied", B: "basically_satisfied"},
        {A: "dissatisfied"},  # abstains on B
        {A: "satisfied", B: "satisfied"},
    ]
    t = tally_round(assigned=5, ballots=ballots, criteria=CRITERIA, rules=FOUR)

    assert (t.assigned, t.cast, t.participation, t.quorum_reached) == (5, 4, 0.8, True)
    assert t.criteria == (
        CriterionResult(
            A,
            {"satisfied": 2, "fairly_satisfied": 1, "basically_satisfied": 0, "dissatisfied": 1},
            answered=4,
            satisfaction_rate=0.75,
        ),
        CriterionResult(
            B,
            {"satisfied": 1, "fairly_satisfied": 0, "basically_satisfied": 1, "dissatisfied": 1},
            answered=3,
            satisfaction_rate=pytest.approx(2 / 3),
        ),
    )
    # 3 satisfied answers on A + 2 on B, out of 7 answers in all.
    assert t.overall_satisfaction == pytest.approx(5 / 7)


def test_three_level_only_top_option_counts_as_satisfied() -> None:
    ballots = [
        {A: "satisfied", B: "average"},
        {A: "average", B: "dissatisfied"},
        {A: "satisfied", B: "satisfied"},
    ]
    t = tally_round(assigned=3, ballots=ballots, criteria=CRITERIA, rules=THREE)

    assert [c.counts for c in t.criteria] == [
        {"satisfied": 2, "average": 1, "dissatisfied": 0},
        {"satisfied": 1, "average": 1, "dissatisfied": 1},
    ]
    assert [c.satisfaction_rate for c in t.criteria] == pytest.approx([2 / 3, 1 / 3])
    assert t.overall_satisfaction == 0.5


def test_criteria_keep_the_given_order() -> None:
    t = tally_round(assigned=1, ballots=[{A: "satisfied"}], criteria=(B, A), rules=FOUR)
    assert [c.criterion for c in t.criteria] == [B, A]


def test_abstention_on_every_item_of_one_criterion_gives_no_rate() -> None:
    t = tally_round(
        assigned=2, ballots=[{A: "satisfied"}, {A: "dissatisfied"}], criteria=CRITERIA, rules=FOUR
    )
    a, b = t.criteria
    assert (a.answered, a.satisfaction_rate) == (2, 0.5)
    assert (b.answered, b.satisfaction_rate) == (0, None)
    assert b.counts == dict.fromkeys(
        ("satisfied", "fairly_satisfied", "basically_satisfied", "dissatisfied"), 0
    )
    assert t.overall_satisfaction == 0.5


def test_blank_ballot_counts_toward_turnout_but_not_rates() -> None:
    t = tally_round(
        assigned=3, ballots=[{}, {}, {A: "dissatisfied"}], criteria=CRITERIA, rules=FOUR
    )
    assert (t.cast, t.quorum_reached) == (3, True)
    assert t.criteria[0].answered == 1
    assert t.overall_satisfaction == 0.0


def test_zero_ballots() -> None:
    t = tally_round(assigned=5, ballots=[], criteria=CRITERIA, rules=FOUR)
    assert (t.cast, t.participation, t.quorum_reached) == (0, 0.0, False)
    assert all(c.answered == 0 and c.satisfaction_rate is None for c in t.criteria)
    assert all(set(c.counts.values()) == {0} for c in t.criteria)
    assert t.overall_satisfaction is None


def test_nobody_assigned() -> None:
    t = tally_round(assigned=0, ballots=[], criteria=CRITERIA, rules=FOUR)
    assert (t.participation, t.quorum_reached, t.overall_satisfaction) == (0.0, False, None)


@pytest.mark.parametrize(
    ("assigned", "cast", "quorum", "reached"),
    [
        (3, 2, 2 / 3, True),  # exactly at quorum counts
        (3, 1, 2 / 3, False),
        (6, 4, 2 / 3, True),
        (9, 5, 2 / 3, False),
        (10, 7, 0.7, True),
        (10, 6, 0.7, False),
        (3, 2, 0.6667, False),  # 66.67% asked, 66.666…% turned out
        (1, 1, 1.0, True),
        (5, 0, 0.01, False),  # a round nobody voted in never counts
    ],
)
def test_quorum_boundary(assigned: int, cast: int, quorum: float, reached: bool) -> None:
    rules = CampaignRules(quorum=quorum)
    ballots = [{A: "satisfied"}] * cast
    t = tally_round(assigned=assigned, ballots=ballots, criteria=CRITERIA, rules=rules)
    assert t.quorum_reached is reached


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ballots": [{"bogus": "satisfied"}]}, "unknown criterion 'bogus'"),
        ({"ballots": [{A: "average"}]}, "option 'average' is not on the four_level scale"),
        ({"ballots": [{A: "satisfied"}] * 4}, "4 ballots cast but only 3"),
        ({"assigned": -1, "ballots": []}, "must not be negative"),
        ({"criteria": (A, A)}, "must not repeat"),
    ],
)
def test_invalid_input_is_refused(kwargs: dict, message: str) -> None:
    args = {"assigned": 3, "ballots": [], "criteria": CRITERIA, "rules": FOUR, **kwargs}
    with pytest.raises(ValueError, match=message):
        tally_round(**args)


def test_four_level_option_is_refused_on_three_level_scale() -> None:
    with pytest.raises(ValueError, match="ballot 2.*'fairly_satisfied'"):
        tally_round(
            assigned=2,
            ballots=[{A: "satisfied"}, {A: "fairly_satisfied"}],
            criteria=CRITERIA,
            rules=THREE,
        )


def test_as_dict_is_json_with_rounded_floats() -> None:
    ballots = [{A: "satisfied"}, {A: "satisfied"}, {A: "dissatisfied"}]
    t = tally_round(assigned=7, ballots=ballots, criteria=CRITERIA, rules=FOUR)
    data = json.loads(json.dumps(t.as_dict()))
    assert data["participation"] == 0.4286
    assert data["quorum_reached"] is False
    assert data["overall_satisfaction"] == 0.6667
    assert data["criteria"][0] == {
        "criterion": A,
        "counts": {"satisfied": 2, "fairly_satisfied": 0, "basically_satisfied": 0,
                   "dissatisfied": 1},
        "answered": 3,
        "satisfaction_rate": 0.6667,
    }
    assert data["criteria"][1]["satisfaction_rate"] is None


@pytest.mark.parametrize(
    ("answers", "rules", "expected"),
    [
        ({A: "satisfied", B: "dissatisfied"}, FOUR, []),
        ({A: "average"}, THREE, []),
        ({A: "satisfied"}, FOUR, []),  # leaving an item blank is allowed
        ({}, FOUR, ["no answers"]),
        ({"bogus": "satisfied"}, FOUR, ["Unknown criterion 'bogus'"]),
        ({A: "average"}, FOUR, ["unknown option 'average'"]),
        ({A: "fairly_satisfied"}, THREE, ["unknown option 'fairly_satisfied'"]),
        ({"bogus": "meh", B: "satisfied"}, FOUR, ["Unknown criterion", "unknown option 'meh'"]),
    ],
)
def test_validate_ballot(answers: dict, rules: CampaignRules, expected: list[str]) -> None:
    problems = validate_ballot(answers, CRITERIA, rules)
    assert len(problems) == len(expected)
    for problem, fragment in zip(problems, expected, strict=True):
        assert fragment in problem
