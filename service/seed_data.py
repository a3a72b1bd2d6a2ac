"""Seed data taken from the notice 吴创组办〔2010〕14号 (pure data: no database code, no I/O).

Source of truth: ``domain/seed-wujiang-2010-14.txt``, issued on 2010-08-19 by the office of the
Wujiang municipal campaign leading group to the Party committees of eight city-owned enterprises.
From it come:

* ``NOTICE`` — the notice's identity;
* ``CAMPAIGN_OFFICE`` and ``UNITS`` — the issuing office and the eight receiving Party
  committees, in the notice's order;
* ``PERIODS`` — the three campaign periods (四、方法步骤).  The period bounds are the notice's; the
  calendar inside each period (deadlines of the four steps) is ours, chosen so the steps follow
  the notice: pledge first, half-yearly review, evaluation with the year-end report, commendation
  near 1 July or the year end, with time for the tally and a public notice before it;
* ``CRITERIA_SETS`` — the four strengths (四强), four excellences (四优) and six carriers (六个一),
  each criterion with a short quotation / condensation of the notice's text.

Demo branches and people are invented and live in ``service.seed_demo_data``; ``demo_orgs`` and
``demo_people`` here delegate to it.  ``DEMO_PASSWORD`` is the demo accounts' password (demo
only, never for a real deployment).  ``validate()`` checks the invariants of all of it and
returns the problems found (an empty list when everything is fine).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

__all__ = [
    "OrgSeed", "CriterionSeed", "CriteriaSetSeed", "PeriodSeed", "PersonSeed",
    "ORG_KINDS", "APPLIES_TO", "ROLES", "LANGS", "MIN_COMMENDATION_GAP",
    "NOTICE", "CAMPAIGN_OFFICE", "UNITS", "PERIODS", "CRITERIA_SETS",
    "DEMO_PASSWORD", "demo_orgs", "demo_people", "validate",
]

ORG_KINDS = ("campaign_office", "committee", "general_branch", "branch")
APPLIES_TO = ("organization", "member", "carrier")
ROLES = (
    "secretary", "deputy", "clerk", "member", "member_representative",
    "worker_representative", "admin", "auditor",
)
LANGS = ("zh", "en")

#: Least time between the end of the evaluation and the commendation: tally, shortlist and a
#: 7-day public notice (公示) with objections must fit in between.
MIN_COMMENDATION_GAP = timedelta(days=21)

#: Shown to people running the demo; never used outside demo seeding.
DEMO_PASSWORD = "pledgeflow-demo"


@dataclass(frozen=True)
class OrgSeed:
    """An organisation: the campaign office, a Party committee, general branch or branch."""

    code: str
    name_zh: str
    name_en: str
    kind: str  # one of ORG_KINDS
    parent_code: str | None


@dataclass(frozen=True)
class CriterionSeed:
    """One criterion of a criteria set, with the notice's wording condensed."""

    code: str
    name_zh: str
    name_en: str
    description_zh: str


@dataclass(frozen=True)
class CriteriaSetSeed:
    """A named set of criteria that applies to organisations, members or carriers."""

    code: str
    name_zh: str
    name_en: str
    applies_to: str  # one of APPLIES_TO
    criteria: tuple[CriterionSeed, ...]


@dataclass(frozen=True)
class PeriodSeed:
    """A campaign period (活动时段) with its calendar; every date lies in starts_on..ends_on."""

    code: str
    sequence: int
    name_zh: str
    name_en: str
    starts_on: date
    ends_on: date
    pledge_due_on: date
    review_opens_on: date
    review_due_on: date
    evaluation_opens_on: date
    evaluation_due_on: date
    commendation_on: date

    def calendar(self) -> tuple[tuple[str, date], ...]:
        """The stage dates in the order they must come."""
        return (
            ("pledge_due_on", self.pledge_due_on),
            ("review_opens_on", self.review_opens_on),
            ("review_due_on", self.review_due_on),
            ("evaluation_opens_on", self.evaluation_opens_on),
            ("evaluation_due_on", self.evaluation_due_on),
            ("commendation_on", self.commendation_on),
        )


@dataclass(frozen=True)
class PersonSeed:
    """A person (Party member or worker) with positions (org_code, role) in organisations."""

    username: str
    name: str
    email: str
    org_code: str
    is_party_member: bool
    positions: tuple[tuple[str, str], ...]  # (org_code, role), role in ROLES
    lang: str = "zh"
    has_account: bool = True


NOTICE: dict[str, object] = {
    "doc_number": "吴创组办〔2010〕14号",
    "issued_on": date(2010, 8, 19),
    "issuer": "中共吴江市委深入开展创先争优活动领导小组办公室",
    "issuer_en": "Office of the Leading Group for the In-Depth Strive-for-Excellence Campaign, "
    "CPC Wujiang Municipal Committee",
    "title": "关于印发《在市属国有（集体）企业党组织和党员中深入开展创先争优活动的指导意见》的通知",
    "title_en": "Notice on issuing the Guiding Opinions on carrying out the Strive-for-Excellence "
    "campaign in depth among the Party organisations and members of city-owned state "
    "(collective) enterprises",
    "based_on": "吴办发〔2010〕74号",
}

CAMPAIGN_OFFICE = OrgSeed(
    code="office",
    name_zh="中共吴江市委深入开展创先争优活动领导小组办公室",
    name_en="Office of the Leading Group for the In-Depth Strive-for-Excellence Campaign, "
    "CPC Wujiang Municipal Committee",
    kind="campaign_office",
    parent_code=None,
)


def _unit(code: str, name_zh: str, name_en: str) -> OrgSeed:
    return OrgSeed(code=code, name_zh=name_zh, name_en=name_en, kind="committee",
                   parent_code=CAMPAIGN_OFFICE.code)


#: The eight receiving units' Party committees, in the order of the notice's address line.
UNITS: tuple[OrgSeed, ...] = (
    _unit("supply-marketing", "市供销企业（集团）总公司党委",
          "Party Committee of the Municipal Supply and Marketing Enterprise (Group) "
          "General Corporation"),
    _unit("commercial-assets", "市商业资产经营有限公司党委",
          "Party Committee of the Municipal Commercial Asset Management Co., Ltd."),
    _unit("urban-investment", "市城市投资发展有限公司党委",
          "Party Committee of the Municipal Urban Investment and Development Co., Ltd."),
    _unit("industrial-assets", "市工业资产经营总公司党委",
          "Party Committee of the Municipal Industrial Asset Management General Corporation"),
    _unit("dongfang-assets", "市东方国有资产经营有限公司党委",
          "Party Committee of the Municipal Dongfang State-Owned Asset Management Co., Ltd."),
    _unit("post", "吴江邮政局党委", "Party Committee of the Wujiang Post Office"),
    _unit("telecom", "电信吴江分公司党委",
          "Party Committee of the Wujiang Branch of China Telecom"),
    _unit("power-supply", "吴江供电公司党委",
          "Party Committee of the Wujiang Power Supply Company"),
)

#: The three periods of the notice (四、方法步骤): 2010年6月开始至2010年底, 2011年1月开始至7月
#: (we end it on 30 June so the periods do not overlap), 2011年7月开始至党的十八大召开前
#: (the 18th Congress opened on 2012-11-08).
PERIODS: tuple[PeriodSeed, ...] = (
    PeriodSeed(
        code="2010", sequence=1,
        name_zh="第一时段（2010年6月至2010年底）", name_en="Period 1 (June–December 2010)",
        starts_on=date(2010, 6, 1), ends_on=date(2010, 12, 31),
        pledge_due_on=date(2010, 9, 17),  # four weeks after the notice of 2010-08-19
        review_opens_on=date(2010, 10, 11),  # after the National Day holiday
        review_due_on=date(2010, 11, 5),
        evaluation_opens_on=date(2010, 11, 15),  # with the year-end report
        evaluation_due_on=date(2010, 12, 3),
        commendation_on=date(2010, 12, 28),  # year end
    ),
    PeriodSeed(
        code="2011-h1", sequence=2,
        name_zh="第二时段（2011年1月至6月）", name_en="Period 2 (January–June 2011)",
        starts_on=date(2011, 1, 1), ends_on=date(2011, 6, 30),
        pledge_due_on=date(2011, 2, 25),  # after the Spring Festival (3 February)
        review_opens_on=date(2011, 3, 14),
        review_due_on=date(2011, 4, 15),
        evaluation_opens_on=date(2011, 5, 3),  # after the May Day holiday
        evaluation_due_on=date(2011, 5, 27),
        commendation_on=date(2011, 6, 28),  # before 1 July, the Party's 90th anniversary
    ),
    PeriodSeed(
        code="2011-2012", sequence=3,
        name_zh="第三时段（2011年7月至党的十八大召开前）",
        name_en="Period 3 (July 2011 to the eve of the 18th Party Congress)",
        starts_on=date(2011, 7, 1), ends_on=date(2012, 11, 7),
        pledge_due_on=date(2011, 8, 31),
        review_opens_on=date(2011, 10, 10),  # after the National Day holiday
        review_due_on=date(2011, 11, 25),
        evaluation_opens_on=date(2011, 12, 12),  # with the 2011 year-end report
        evaluation_due_on=date(2012, 1, 13),  # before the Spring Festival (23 January)
        commendation_on=date(2012, 6, 29),  # before 1 July 2012
    ),
)


def _c(code: str, name_zh: str, name_en: str, description_zh: str) -> CriterionSeed:
    return CriterionSeed(code=code, name_zh=name_zh, name_en=name_en,
                         description_zh=description_zh)


CRITERIA_SETS: tuple[CriteriaSetSeed, ...] = (
    CriteriaSetSeed(
        code="four_strengths", name_zh="“四强”党组织",
        name_en="Four strengths (Party organisations)", applies_to="organization",
        criteria=(
            _c("political_leadership", "政治引领力强", "Strong political leadership",
               "坚持用中国特色社会主义理论体系武装头脑，保证监督党的路线方针政策和国家法律法规"
               "在企业的贯彻执行，推动企业积极主动承担经济责任、政治责任、社会责任。"),
            _c("development_drive", "推动发展力强", "Strong drive for development",
               "积极参与企业重大问题决策，紧紧围绕企业改革发展中心任务，发动党员干部和职工在"
               "破解生产经营难题、完成急难险重任务、落实生产经营目标中充分发挥作用。"),
            _c("reform_innovation", "改革创新力强", "Strong reform and innovation",
               "大力推进企业党建工作创新，保障党员主体地位和民主权利，丰富党组织活动载体，"
               "以党建工作创新促进企业管理创新、技术创新，增强企业核心竞争力。"),
            _c("cohesion_support", "凝聚保障力强", "Strong cohesion and support",
               "加强经营管理者、人才、党员、职工队伍建设，健全党组织工作机构，完善党建工作机制；"
               "有效开展思想政治工作，加强企业民主管理，保障职工合法权益，促进企业和谐稳定。"),
        ),
    ),
    CriteriaSetSeed(
        code="four_excellences", name_zh="“四优”共产党员",
        name_en="Four excellences (Party members)", applies_to="member",
        criteria=(
            _c("political_quality", "政治素质优", "Excellent political quality",
               "加强政治学习，坚定理想信念，增强党员意识，执行党的决定，遵守党的纪律，"
               "践行科学发展观，讲党性、重品行、作表率。"),
            _c("job_skill", "岗位技能优", "Excellent job skills",
               "积极学习市场经济、现代科技、经营管理、法律法规等知识，刻苦钻研业务，熟练掌握"
               "岗位技能，成为促进企业科学发展的骨干力量。"),
            _c("work_performance", "工作业绩优", "Excellent work performance",
               "爱岗敬业，勤奋工作，勇挑重担，带领群众攻坚克难，创造一流业绩，成为生产经营的"
               "能手、创新创业的模范、提高效益的标兵。"),
            _c("mass_rating", "群众评价优", "Excellent rating by the public",
               "立足本职，甘于奉献，廉洁从业，树立良好形象；牢记党的宗旨，联系服务职工群众，"
               "听取和反映职工群众意见，帮助解决实际困难。"),
        ),
    ),
    CriteriaSetSeed(
        code="six_carriers", name_zh="“六个一”活动载体",
        name_en="Six carriers (“six ones”)", applies_to="carrier",
        criteria=(
            _c("demonstration_brand", "争创一个示范品牌", "Build one demonstration brand",
               "开展争创示范工程、示范窗口、示范业绩、示范成果等活动，激发基层党组织和党员"
               "创先争优的活力和动力。"),
            _c("development_problem", "解决一个发展难题", "Solve one development problem",
               "围绕改革发展中的难点重点问题，开展“我为发展献一策”活动，征集党员、职工建议；"
               "落实“党课学习日”制度，推行“党员人人当教员”党课模式。"),
            _c("backbone_training", "培养一名党员骨干", "Train one Party-member backbone",
               "推进“双向培养”，把优秀生产经营骨干和岗位能手培养发展成党员，把党员培养成"
               "企业生产经营和管理骨干，每年至少各培养一名。"),
            _c("worker_contact", "联系一名职工群众", "Stay in contact with one worker",
               "每名有条件的党员联系一名困难职工，实施结对帮扶；建立“民情日记”制度，"
               "积极为困难职工办实事办好事。"),
            _c("enterprise_pairing", "结对一家民营企业", "Pair with one private enterprise",
               "与民营企业党组织结对创先争优，共同承诺创争内容，每半年召开一次交叉点评会议，"
               "组织党员群众进行满意度测评。"),
            _c("role_model", "选树一个先进典型", "Select and promote one role model",
               "积极选树、培育活动中涌现的先进典型，每个单位至少选树一个，大力宣传推介典型事迹，"
               "使广大党员职工学有标杆、干有榜样。"),
        ),
    ),
)


def demo_orgs() -> tuple[OrgSeed, ...]:
    """Invented demo branches (see ``service.seed_demo_data``)."""
    from service.seed_demo_data import demo_orgs as _demo_orgs

    return _demo_orgs()


def demo_people() -> tuple[PersonSeed, ...]:
    """Invented demo people (see ``service.seed_demo_data``)."""
    from service.seed_demo_data import demo_people as _demo_people

    return _demo_people()


# Which roles may be held in which kind of organisation.
_ROLE_KINDS: dict[str, tuple[str, ...]] = {
    "admin": ("campaign_office",),
    "auditor": ("campaign_office",),
    "secretary": ("committee", "general_branch", "branch"),
    "deputy": ("committee", "general_branch", "branch"),
    "clerk": ("committee", "general_branch", "branch"),
    "member": ("committee", "general_branch", "branch"),
    "member_representative": ("committee", "general_branch", "branch"),
    "worker_representative": ("committee", "general_branch", "branch"),
}
# Which kinds of organisation may be the parent of which kind.
_PARENT_KINDS: dict[str, tuple[str, ...]] = {
    "committee": ("campaign_office",),
    "general_branch": ("committee",),
    "branch": ("committee", "general_branch"),
}
_PARTY_ROLES = frozenset(ROLES) - {"worker_representative"}


def _check_orgs(orgs: tuple[OrgSeed, ...]) -> list[str]:
    problems: list[str] = []
    by_code: dict[str, OrgSeed] = {}
    for org in orgs:
        if org.code in by_code:
            problems.append(f"org {org.code!r}: duplicate code")
        by_code[org.code] = org
        if not org.code.isascii() or not org.code or org.code != org.code.strip():
            problems.append(f"org {org.code!r}: code must be non-empty ASCII")
        if org.kind not in ORG_KINDS:
            problems.append(f"org {org.code!r}: unknown kind {org.kind!r}")
        if not org.name_zh or not org.name_en:
            problems.append(f"org {org.code!r}: missing name")
    for org in orgs:
        if org.kind == "campaign_office":
            if org.parent_code is not None:
                problems.append(f"org {org.code!r}: the campaign office has no parent")
            continue
        parent = by_code.get(org.parent_code or "")
        if parent is None:
            problems.append(f"org {org.code!r}: parent {org.parent_code!r} does not exist")
        elif parent.kind not in _PARENT_KINDS.get(org.kind, ()):
            problems.append(f"org {org.code!r}: a {org.kind} cannot be under a {parent.kind}")
    if sum(o.kind == "campaign_office" for o in orgs) != 1:
        problems.append("there must be exactly one campaign office")
    return problems


def _check_periods(periods: tuple[PeriodSeed, ...]) -> list[str]:
    problems: list[str] = []
    if len({p.code for p in periods}) != len(periods):
        problems.append("period codes are not unique")
    if [p.sequence for p in periods] != list(range(1, len(periods) + 1)):
        problems.append("period sequences must be 1, 2, 3, ... in order")
    issued_on = NOTICE["issued_on"]
    for p in periods:
        if p.starts_on >= p.ends_on:
            problems.append(f"period {p.code!r}: starts_on must be before ends_on")
        for field, day in p.calendar():
            if not p.starts_on <= day <= p.ends_on:
                problems.append(f"period {p.code!r}: {field} {day} is outside the period")
        cal = p.calendar()
        for (a, da), (b, db) in zip(cal, cal[1:], strict=False):
            if not da < db:
                problems.append(f"period {p.code!r}: {a} ({da}) must be before {b} ({db})")
        if p.commendation_on - p.evaluation_due_on < MIN_COMMENDATION_GAP:
            problems.append(f"period {p.code!r}: too little time between evaluation and "
                            "commendation for the tally and the public notice")
        if isinstance(issued_on, date) and p.pledge_due_on <= issued_on:
            problems.append(f"period {p.code!r}: pledge deadline before the notice was issued")
    for prev, nxt in zip(periods, periods[1:], strict=False):
        if nxt.starts_on != prev.ends_on + timedelta(days=1):
            problems.append(f"periods {prev.code!r} and {nxt.code!r} are not contiguous")
    return problems


def _check_criteria(sets: tuple[CriteriaSetSeed, ...]) -> list[str]:
    problems: list[str] = []
    if len({s.code for s in sets}) != len(sets):
        problems.append("criteria set codes are not unique")
    for s in sets:
        if s.applies_to not in APPLIES_TO:
            problems.append(f"criteria set {s.code!r}: unknown applies_to {s.applies_to!r}")
        if not s.criteria:
            problems.append(f"criteria set {s.code!r}: no criteria")
        if len({c.code for c in s.criteria}) != len(s.criteria):
            problems.append(f"criteria set {s.code!r}: criterion codes are not unique")
        for c in s.criteria:
            if not (c.name_zh and c.name_en and c.description_zh):
                problems.append(f"criterion {s.code}.{c.code}: missing name or description")
    return problems


def _check_people(people: tuple[PersonSeed, ...], orgs: dict[str, OrgSeed]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for p in people:
        who = f"person {p.username!r}"
        if p.username in seen:
            problems.append(f"{who}: duplicate username")
        seen.add(p.username)
        if not p.username.isascii() or not p.username or " " in p.username:
            problems.append(f"{who}: username must be ASCII without spaces")
        if p.email != f"{p.username}@example.org":
            problems.append(f"{who}: email must be <username>@example.org")
        if p.lang not in LANGS:
            problems.append(f"{who}: unknown lang {p.lang!r}")
        if p.org_code not in orgs:
            problems.append(f"{who}: org {p.org_code!r} does not exist")
        if len(set(p.positions)) != len(p.positions):
            problems.append(f"{who}: duplicate position")
        for org_code, role in p.positions:
            org = orgs.get(org_code)
            if role not in ROLES:
                problems.append(f"{who}: unknown role {role!r}")
            elif org is None:
                problems.append(f"{who}: position in unknown org {org_code!r}")
            elif org.kind not in _ROLE_KINDS[role]:
                problems.append(f"{who}: role {role!r} cannot be held in a {org.kind}")
            if role in _PARTY_ROLES and not p.is_party_member:
                problems.append(f"{who}: role {role!r} needs a Party member")
            if role != "worker_representative" and not p.has_account:
                problems.append(f"{who}: role {role!r} needs an account")
    return problems


def validate() -> list[str]:
    """Check the invariants of the seed and demo data; return the problems (empty when fine)."""
    orgs = (CAMPAIGN_OFFICE, *UNITS, *demo_orgs())
    problems = _check_orgs(orgs)
    if len(UNITS) != 8 or any(u.kind != "committee" for u in UNITS):
        problems.append("UNITS must be the eight receiving Party committees")
    problems += _check_periods(PERIODS)
    problems += _check_criteria(CRITERIA_SETS)
    problems += _check_people(demo_people(), {o.code: o for o in orgs})
    return problems
