"""Invented demo data: branches and people under the eight units of the seed notice.

Nothing here comes from the notice.  Branch names are plausible but made up, the people are
fictitious (names drawn deterministically from common surnames and given names), and every
e-mail address is ``<username>@example.org``.  ``DEMO_PASSWORD`` is for local demos only and
must never be used for a real deployment.

Structure (deterministic: two calls return equal tuples):

* campaign office: ``office.admin`` and ``office.deputy`` (admin), ``auditor`` (auditor);
* each unit ``<unit>``: ``<unit>.secretary`` / ``.deputy`` / ``.clerk`` in the unit committee,
  two branches ``<unit>.b1`` and ``<unit>.b2``, and two workers ``<unit>.w1`` / ``<unit>.w2``
  (worker representatives; ``w2`` has no account);
* units ``post`` and ``power-supply`` also have a general branch ``<unit>.g1`` (with a
  secretary) and a branch ``<unit>.g1.b1`` below it;
* each branch ``<branch>``: ``<branch>.secretary`` and members ``<branch>.m1`` .. ``.m3``;
  ``m1`` is also a member representative.
"""

from __future__ import annotations

import random

from service.seed_data import DEMO_PASSWORD, UNITS, OrgSeed, PersonSeed

__all__ = ["DEMO_PASSWORD", "demo_orgs", "demo_people"]

# unit code -> ((name_zh, name_en) of branch b1, of branch b2)
_BRANCHES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "supply-marketing": (
        ("农资公司党支部", "Agricultural Supplies Company Branch"),
        ("再生资源公司党支部", "Recycling Company Branch"),
    ),
    "commercial-assets": (
        ("物业管理部党支部", "Property Management Department Branch"),
        ("资产经营部党支部", "Asset Operations Department Branch"),
    ),
    "urban-investment": (
        ("工程建设部党支部", "Construction Department Branch"),
        ("投融资部党支部", "Investment and Financing Department Branch"),
    ),
    "industrial-assets": (
        ("机关党支部", "Head Office Branch"),
        ("资产管理部党支部", "Asset Management Department Branch"),
    ),
    "dongfang-assets": (
        ("机关党支部", "Head Office Branch"),
        ("资产运营部党支部", "Asset Operations Department Branch"),
    ),
    "post": (
        ("松陵邮政支局党支部", "Songling Post Sub-Office Branch"),
        ("邮件处理中心党支部", "Mail Processing Centre Branch"),
    ),
    "telecom": (
        ("网络运行维护部党支部", "Network Operations and Maintenance Branch"),
        ("客户服务中心党支部", "Customer Service Centre Branch"),
    ),
    "power-supply": (
        ("变电运行工区党支部", "Substation Operations Branch"),
        ("营销部党支部", "Marketing Department Branch"),
    ),
}

# unit code -> (general branch name_zh, name_en, its branch name_zh, name_en)
_GENERAL_BRANCHES: dict[str, tuple[str, str, str, str]] = {
    "post": ("农村邮政党总支", "Rural Postal Services General Branch",
             "盛泽邮政支局党支部", "Shengze Post Sub-Office Branch"),
    "power-supply": ("生产党总支", "Production General Branch",
                     "输电线路工区党支部", "Transmission Lines Branch"),
}

# People who prefer English notifications.
_ENGLISH = frozenset({
    "office.deputy", "telecom.clerk", "urban-investment.b2.m3", "power-supply.g1.b1.m2",
})

_SURNAMES = "沈顾陆钱费姚吴徐周朱王张李陈杨金潘蒋施严倪邱凌盛俞汤范孙胡袁"
_GIVEN_NAMES = (
    "建国", "卫东", "志强", "美华", "秀英", "建华", "国平", "红梅", "丽娟", "伟",
    "敏", "杰", "勇", "静", "军", "磊", "海燕", "晓明", "春林", "雪芬",
    "根荣", "金华", "福林", "玉珍", "文斌", "小平", "振华", "惠芳", "一鸣", "嘉伟",
    "亚萍", "永康", "宏", "琴", "云", "建新", "雅琴", "明", "晓燕", "德兴",
)
_NAME_SEED = 20100819  # the notice's date; any fixed seed keeps the data deterministic


def demo_orgs() -> tuple[OrgSeed, ...]:
    """Two branches per unit, plus a general branch with one branch in ``post``/``power-supply``."""
    orgs: list[OrgSeed] = []
    for unit in UNITS:
        for i, (name_zh, name_en) in enumerate(_BRANCHES[unit.code], start=1):
            orgs.append(OrgSeed(f"{unit.code}.b{i}", name_zh, name_en, "branch", unit.code))
        if unit.code in _GENERAL_BRANCHES:
            g_zh, g_en, b_zh, b_en = _GENERAL_BRANCHES[unit.code]
            general = f"{unit.code}.g1"
            orgs.append(OrgSeed(general, g_zh, g_en, "general_branch", unit.code))
            orgs.append(OrgSeed(f"{general}.b1", b_zh, b_en, "branch", general))
    return tuple(orgs)


def _plan() -> list[tuple[str, str, bool, tuple[tuple[str, str], ...], bool]]:
    """(username, org_code, is_party_member, positions, has_account) for every demo person."""
    plan: list[tuple[str, str, bool, tuple[tuple[str, str], ...], bool]] = [
        ("office.admin", "office", True, (("office", "admin"),), True),
        ("office.deputy", "office", True, (("office", "admin"),), True),
        ("auditor", "office", True, (("office", "auditor"),), True),
    ]
    orgs = demo_orgs()
    for unit in UNITS:
        for role in ("secretary", "deputy", "clerk"):
            plan.append((f"{unit.code}.{role}", unit.code, True, ((unit.code, role),), True))
        for org in orgs:
            if not org.code.startswith(f"{unit.code}."):
                continue
            plan.append((f"{org.code}.secretary", org.code, True, ((org.code, "secretary"),),
                         True))
            if org.kind != "branch":
                continue
            for m in (1, 2, 3):
                positions: tuple[tuple[str, str], ...] = ((org.code, "member"),)
                if m == 1:
                    positions += ((org.code, "member_representative"),)
                plan.append((f"{org.code}.m{m}", org.code, True, positions, True))
        for w in (1, 2):
            plan.append((f"{unit.code}.w{w}", unit.code, False,
                         ((unit.code, "worker_representative"),), w == 1))
    return plan


def _names(count: int) -> list[str]:
    pool = [s + g for s in _SURNAMES for g in _GIVEN_NAMES]
    return random.Random(_NAME_SEED).sample(pool, count)


def demo_people() -> tuple[PersonSeed, ...]:
    """Every demo person, in a stable order; see the module docstring for the structure."""
    plan = _plan()
    return tuple(
        PersonSeed(
            username=username,
            name=name,
            email=f"{username}@example.org",
            org_code=org_code,
            is_party_member=is_party_member,
            positions=positions,
            lang="en" if username in _ENGLISH else "zh",
            has_account=has_account,
        )
        for (username, org_code, is_party_member, positions, has_account), name in zip(
            plan, _names(len(plan)), strict=True
        )
    )
