"""Seed data from 吴创组办〔2010〕14号 and the invented demo data: pure data, no database."""

from __future__ import annotations

from collections import Counter
from dataclasses import FrozenInstanceError
from datetime import date

import pytest

from service import seed_data as sd
from service import seed_demo_data as demo

# The notice's address line, in order: "...党委" applies to each of the eight enterprises.
NOTICE_UNITS = (
    "市供销企业（集团）总公司",
    "市商业资产经营有限公司",
    "市城市投资发展有限公司",
    "市工业资产经营总公司",
    "市东方国有资产经营有限公司",
    "吴江邮政局",
    "电信吴江分公司",
    "吴江供电公司",
)


def test_validate_finds_no_problems():
    assert sd.validate() == []


def test_notice_identity():
    assert sd.NOTICE["doc_number"] == "吴创组办〔2010〕14号"
    assert sd.NOTICE["issued_on"] == date(2010, 8, 19)
    assert sd.NOTICE["issuer"] == "中共吴江市委深入开展创先争优活动领导小组办公室"
    assert "指导意见" in str(sd.NOTICE["title"])
    assert sd.CAMPAIGN_OFFICE.code == "office"
    assert sd.CAMPAIGN_OFFICE.kind == "campaign_office"
    assert sd.CAMPAIGN_OFFICE.parent_code is None


def test_eight_units_in_notice_order():
    assert len(sd.UNITS) == 8
    assert tuple(u.name_zh for u in sd.UNITS) == tuple(f"{n}党委" for n in NOTICE_UNITS)
    assert [u.code for u in sd.UNITS] == [
        "supply-marketing", "commercial-assets", "urban-investment", "industrial-assets",
        "dongfang-assets", "post", "telecom", "power-supply",
    ]
    for unit in sd.UNITS:
        assert unit.kind == "committee"
        assert unit.parent_code == "office"
        assert unit.code.isascii()
        assert unit.name_en.startswith("Party Committee of the ")


def test_three_periods_with_the_notice_dates():
    assert [(p.code, p.sequence, p.starts_on, p.ends_on) for p in sd.PERIODS] == [
        ("2010", 1, date(2010, 6, 1), date(2010, 12, 31)),
        ("2011-h1", 2, date(2011, 1, 1), date(2011, 6, 30)),
        ("2011-2012", 3, date(2011, 7, 1), date(2012, 11, 7)),
    ]


@pytest.mark.parametrize("period", sd.PERIODS, ids=lambda p: p.code)
def test_period_calendar_is_ordered_and_inside_the_period(period):
    days = [d for _, d in period.calendar()]
    assert days == sorted(days) and len(set(days)) == len(days)
    assert period.starts_on <= days[0] and days[-1] <= period.ends_on
    assert (period.commendation_on - period.evaluation_due_on).days >= 21
    assert period.pledge_due_on > sd.NOTICE["issued_on"]


def test_criteria_sets():
    sets = {s.code: s for s in sd.CRITERIA_SETS}
    assert [s.code for s in sd.CRITERIA_SETS] == [
        "four_strengths", "four_excellences", "six_carriers",
    ]
    assert {c: s.applies_to for c, s in sets.items()} == {
        "four_strengths": "organization", "four_excellences": "member",
        "six_carriers": "carrier",
    }
    assert [c.code for c in sets["four_strengths"].criteria] == [
        "political_leadership", "development_drive", "reform_innovation", "cohesion_support",
    ]
    assert [c.code for c in sets["four_excellences"].criteria] == [
        "political_quality", "job_skill", "work_performance", "mass_rating",
    ]
    assert [c.code for c in sets["six_carriers"].criteria] == [
        "demonstration_brand", "development_problem", "backbone_training", "worker_contact",
        "enterprise_pairing", "role_model",
    ]
    assert [c.name_zh for c in sets["four_strengths"].criteria] == [
        "政治引领力强", "推动发展力强", "改革创新力强", "凝聚保障力强",
    ]
    assert [c.name_zh for c in sets["four_excellences"].criteria] == [
        "政治素质优", "岗位技能优", "工作业绩优", "群众评价优",
    ]
    for s in sd.CRITERIA_SETS:
        for c in s.criteria:
            assert c.description_zh and c.name_en


def test_demo_orgs_structure():
    orgs = sd.demo_orgs()
    for unit in sd.UNITS:
        branches = [o for o in orgs if o.parent_code == unit.code and o.kind == "branch"]
        assert len(branches) == 2
    generals = [o for o in orgs if o.kind == "general_branch"]
    assert len(generals) == 2
    assert {g.parent_code for g in generals} <= {u.code for u in sd.UNITS}
    for g in generals:
        assert [o.kind for o in orgs if o.parent_code == g.code] == ["branch"]


def test_demo_people_cover_every_role():
    roles = {role for p in sd.demo_people() for _, role in p.positions}
    assert roles == set(sd.ROLES)


def test_demo_people_structure():
    people = sd.demo_people()
    by_name = {p.username: p for p in people}
    assert by_name["office.admin"].positions == (("office", "admin"),)
    assert by_name["office.deputy"].positions == (("office", "admin"),)
    assert by_name["auditor"].positions == (("office", "auditor"),)
    for unit in sd.UNITS:
        for role in ("secretary", "deputy", "clerk"):
            assert (unit.code, role) in by_name[f"{unit.code}.{role}"].positions
        workers = [p for p in people
                   if (unit.code, "worker_representative") in p.positions]
        assert len(workers) == 2
        assert all(not w.is_party_member for w in workers)
        assert sorted(w.has_account for w in workers) == [False, True]
    for branch in (o for o in sd.demo_orgs() if o.kind == "branch"):
        holders = Counter(role for p in people for org, role in p.positions
                          if org == branch.code)
        assert holders["secretary"] == 1
        assert holders["member"] == 3
        assert holders["member_representative"] == 1
    assert any(p.lang == "en" for p in people)
    assert all(p.username.isascii() for p in people)
    assert len({p.username for p in people}) == len(people)


def test_all_emails_are_example_org():
    people = sd.demo_people()
    assert people
    assert all(p.email.endswith("@example.org") for p in people)
    assert all(p.email == f"{p.username}@example.org" for p in people)


def test_demo_data_is_deterministic():
    assert sd.demo_orgs() == sd.demo_orgs()
    assert sd.demo_people() == sd.demo_people()
    assert sd.demo_people() == demo.demo_people()
    assert sd.DEMO_PASSWORD == demo.DEMO_PASSWORD == "pledgeflow-demo"


def test_seeds_are_frozen():
    with pytest.raises(FrozenInstanceError):
        sd.UNITS[0].code = "changed"  # type: ignore[misc]


def test_validation_catches_broken_data():
    from dataclasses import replace

    p = sd.PERIODS[0]
    bad = replace(p, review_opens_on=p.pledge_due_on, commendation_on=date(2011, 1, 5))
    problems = sd._check_periods((bad, *sd.PERIODS[1:]))
    assert any("review_opens_on" in x for x in problems)
    assert any("outside the period" in x for x in problems)
    orphan = sd.OrgSeed("x.b9", "某党支部", "Some Branch", "branch", "nowhere")
    assert any("does not exist" in x for x in sd._check_orgs((sd.CAMPAIGN_OFFICE, orphan)))
    worker = sd.PersonSeed("w", "某人", "w@example.com", "office", False, (("office", "clerk"),))
    problems = sd._check_people((worker,), {"office": sd.CAMPAIGN_OFFICE})
    assert any("example.org" in x for x in problems)
    assert any("cannot be held" in x for x in problems)
    assert any("needs a Party member" in x for x in problems)
