"""Importing organizations and people from CSV, with a report of rejected rows.

``check`` reads a file (UTF-8, with or without BOM, or GB18030 as Excel saves it on Chinese
Windows) and judges every row against the database and the rows before it: accepted rows, and
rejected rows each with every reason (unknown parent code, duplicate code or e-mail, bad kind
or role, missing field …). It writes nothing: that is the dry run. ``apply`` writes the accepted
rows — in the caller's one transaction, so all of them or none — and appends one event.

Headers may be English or Chinese (``COLUMNS``). New units and people take part from the next
period that opens (cases are opened per period).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Organization, Person, Position
from service import history
from service.office import Why
from service.workflow.roles import Actor

__all__ = ["COLUMNS", "KINDS", "ROLE_NAMES", "Row", "Report", "check", "apply", "decode",
           "MAX_ROWS"]

MAX_ROWS = 5000
#: kind -> (column, required, accepted headers); the first header is the canonical one.
COLUMNS: dict[str, tuple[tuple[str, bool, tuple[str, ...]], ...]] = {
    "organizations": (
        ("code", True, ("code", "编码", "代码", "组织编码")),
        ("name_zh", True, ("name_zh", "名称", "中文名称", "组织名称")),
        ("name_en", False, ("name_en", "英文名称")),
        ("kind", True, ("kind", "类别", "类型", "组织类别")),
        ("parent_code", True, ("parent_code", "上级编码", "上级组织编码", "上级党组织编码")),
    ),
    "people": (
        ("name", True, ("name", "姓名")),
        ("email", True, ("email", "电子邮箱", "邮箱", "电子邮件")),
        ("organization_code", True, ("organization_code", "组织编码", "所在组织编码",
                                     "单位编码")),
        ("roles", False, ("roles", "职务", "角色")),
        ("party_member", False, ("party_member", "是否党员", "党员")),
        ("lang", False, ("lang", "语言")),
    ),
}
#: Organization kinds an import may create, by the names accepted, and their level in the tree.
KINDS = {"committee": "committee", "党委": "committee", "general_branch": "general_branch",
         "党总支": "general_branch", "branch": "branch", "党支部": "branch"}
_LEVEL = {"campaign_office": 0, "committee": 1, "general_branch": 2, "branch": 3}
#: Positions an import may grant (never the office's admin or auditor), by the names accepted.
ROLE_NAMES = {
    "secretary": "secretary", "书记": "secretary", "第一责任人": "secretary",
    "deputy": "deputy", "副书记": "deputy", "直接责任人": "deputy",
    "clerk": "clerk", "党务干事": "clerk", "党务工作者": "clerk",
    "member": "member", "党员": "member",
    "member_representative": "member_representative", "党员代表": "member_representative",
    "worker_representative": "worker_representative", "职工代表": "worker_representative",
}
_YES = {"yes", "y", "true", "1", "是"}
_NO = {"no", "n", "false", "0", "否"}
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
_SPLIT = re.compile(r"[;；、|/\s]+")


@dataclass
class Row:
    """One data row: its line in the file, its values, and why it was rejected (if it was)."""

    line: int
    values: dict[str, str]
    reasons: list[Why] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return not self.reasons


@dataclass
class Report:
    """A dry run: every row judged, and problems with the file as a whole."""

    kind: str
    rows: list[Row] = field(default_factory=list)
    problems: list[Why] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> list[Row]:
        return [r for r in self.rows if r.accepted] if not self.problems else []

    @property
    def rejected(self) -> list[Row]:
        return [r for r in self.rows if not r.accepted]

    def digest(self) -> str:
        """A fingerprint of the accepted rows: an import confirms exactly what it showed."""
        rows = [[r.line, r.values] for r in self.accepted]
        return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False)
                              .encode()).hexdigest()


def decode(data: bytes) -> str:
    """The file's text: UTF-8 (BOM or not), else GB18030 (Excel on Chinese Windows)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030", errors="replace")


def _header_map(kind: str, header: list[str], report: Report) -> dict[int, str]:
    wanted = {alias.strip().lower(): name for name, _, aliases in COLUMNS[kind]
              for alias in aliases}
    mapping: dict[int, str] = {}
    for i, title in enumerate(header):
        name = wanted.get(title.strip().lower())
        if name is None or name in mapping.values():
            if title.strip():
                report.ignored_columns.append(title.strip())
            continue
        mapping[i] = name
    missing = [name for name, required, _ in COLUMNS[kind]
               if required and name not in mapping.values()]
    if missing:
        report.problems.append(Why("missing_column", "the header lacks: " + ", ".join(missing),
                                   "表头缺少以下列：" + "、".join(missing)))
    return mapping


def check(session: Session, kind: str, text: str) -> Report:
    """Judge every row of a CSV of ``organizations`` or ``people``; writes nothing."""
    report = Report(kind)
    if kind not in COLUMNS:
        report.problems.append(Why("bad_kind", "import organizations or people",
                                   "请选择导入组织还是人员"))
        return report
    lines = list(csv.reader(io.StringIO(text.replace("\r\n", "\n"))))
    rows = [(n, cells) for n, cells in enumerate(lines, start=1) if any(c.strip() for c in cells)]
    if not rows:
        report.problems.append(Why("empty_file", "the file has no header and no rows",
                                   "文件是空的"))
        return report
    (_, header), data = rows[0], rows[1:]
    mapping = _header_map(kind, header, report)
    if len(data) > MAX_ROWS:
        report.problems.append(Why("too_many_rows", f"at most {MAX_ROWS} rows per file",
                                   f"每个文件最多{MAX_ROWS}行"))
    if not data:
        report.problems.append(Why("no_rows", "the file has a header but no rows",
                                   "文件只有表头，没有数据"))
    if report.problems:
        return report
    for line, cells in data:
        values = {name: "" for name, _, _ in COLUMNS[kind]}
        values |= {name: cells[i].strip() for i, name in mapping.items() if i < len(cells)}
        report.rows.append(Row(line, values))
    (_check_organizations if kind == "organizations" else _check_people)(session, report)
    return report


def _missing(row: Row, kind: str) -> None:
    empty = [name for name, required, _ in COLUMNS[kind] if required and not row.values[name]]
    if empty:
        row.reasons.append(Why("missing_field", "missing: " + ", ".join(empty),
                               "缺少必填项：" + "、".join(empty)))


def _check_organizations(session: Session, report: Report) -> None:
    known = {code: kind for code, kind in session.execute(
        sa.select(Organization.code, Organization.kind).where(Organization.active.is_(True)))}
    taken = set(session.scalars(sa.select(Organization.code)))
    seen: dict[str, int] = {}
    for row in report.rows:
        v = row.values
        _missing(row, "organizations")
        code, parent, kind = v["code"], v["parent_code"], KINDS.get(v["kind"].lower())
        if code and not _CODE.match(code):
            row.reasons.append(Why("bad_code", f"code {code!r}: use letters, digits, '.', "
                                   "'_', '-' (at most 64)",
                                   f"编码“{code}”无效：只能用字母、数字和 . _ -"))
        if code in taken:
            row.reasons.append(Why("duplicate_code", f"code {code!r} already exists",
                                   f"编码“{code}”已存在"))
        elif code in seen:
            row.reasons.append(Why("duplicate_code", f"code {code!r} repeats line {seen[code]}",
                                   f"编码“{code}”与第{seen[code]}行重复"))
        if v["kind"] and kind is None:
            row.reasons.append(Why("bad_kind", f"kind {v['kind']!r}: use committee, "
                                   "general_branch or branch", f"类别“{v['kind']}”无效："
                                   "应为党委、党总支或党支部"))
        if parent and parent not in known:
            row.reasons.append(Why("unknown_parent", f"unknown parent code {parent!r} (parents "
                                   "come before their children)", f"上级组织编码“{parent}”不存在"
                                   "（上级须在本文件前面的行或系统中已有）"))
        elif parent and kind and _LEVEL[known[parent]] >= _LEVEL[kind]:
            row.reasons.append(Why("bad_parent_kind", f"a {kind} cannot sit under a "
                                   f"{known[parent]}", "上级组织的层级不对（党委在领导小组办公室"
                                   "下，党总支在党委下，党支部在党委或党总支下）"))
        if len(v["name_zh"]) > 200 or len(v["name_en"]) > 200:
            row.reasons.append(Why("too_long", "names have at most 200 characters",
                                   "名称不能超过200字"))
        seen.setdefault(code, row.line)
        if row.accepted:
            known[code] = kind  # type: ignore[assignment]  # children may follow in the file


def _roles(text: str) -> tuple[list[str], list[str]]:
    parts = [p for p in _SPLIT.split(text.strip()) if p]
    return ([ROLE_NAMES[p.lower()] for p in parts if p.lower() in ROLE_NAMES],
            [p for p in parts if p.lower() not in ROLE_NAMES])


def _check_people(session: Session, report: Report) -> None:
    orgs = {code: kind for code, kind in session.execute(
        sa.select(Organization.code, Organization.kind).where(Organization.active.is_(True)))}
    emails = {e.lower() for e in session.scalars(sa.select(Person.email)) if e}
    seen: dict[str, int] = {}
    for row in report.rows:
        v = row.values
        _missing(row, "people")
        email = v["email"].lower()
        if v["email"] and not _EMAIL.match(v["email"]):
            row.reasons.append(Why("bad_email", f"{v['email']!r} is not an e-mail address",
                                   f"“{v['email']}”不是有效的电子邮箱"))
        if email in emails:
            row.reasons.append(Why("duplicate_email", f"{v['email']} already belongs to someone",
                                   f"电子邮箱{v['email']}已被使用"))
        elif email and email in seen:
            row.reasons.append(Why("duplicate_email", f"{v['email']} repeats line {seen[email]}",
                                   f"电子邮箱与第{seen[email]}行重复"))
        code = v["organization_code"]
        if code and code not in orgs:
            row.reasons.append(Why("unknown_organization", f"unknown organization code {code!r}",
                                   f"组织编码“{code}”不存在"))
        roles, unknown = _roles(v["roles"])
        if unknown:
            row.reasons.append(Why("bad_role", f"unknown roles: {', '.join(unknown)} (office "
                                   "roles are never imported)", f"职务无效：{'、'.join(unknown)}"
                                   "（领导小组办公室的管理员、审计员不能导入）"))
        flag = v["party_member"].lower()
        if flag and flag not in _YES | _NO:
            row.reasons.append(Why("bad_flag", f"party_member {v['party_member']!r}: use yes/no",
                                   f"是否党员“{v['party_member']}”无效：应填是或否"))
        elif flag in _NO and "member" in roles:
            row.reasons.append(Why("bad_role", "the role member needs a Party member",
                                   "非党员不能担任“党员”职务"))
        if v["lang"] and v["lang"].lower() not in ("zh", "en", "中文", "英文"):
            row.reasons.append(Why("bad_lang", f"lang {v['lang']!r}: use zh or en",
                                   f"语言“{v['lang']}”无效：应为zh或en"))
        if len(v["name"]) > 100:
            row.reasons.append(Why("too_long", "names have at most 100 characters",
                                   "姓名不能超过100字"))
        if orgs.get(code) == "campaign_office":
            row.reasons.append(Why("bad_organization", "people of the campaign office are not "
                                   "imported", "领导小组办公室人员不通过导入添加"))
        if email:
            seen.setdefault(email, row.line)


def apply(session: Session, report: Report, *, actor: Actor, now: datetime) -> int:
    """Write the accepted rows (in the caller's transaction: all or nothing); their count."""
    rows = report.accepted
    if not rows:
        return 0
    if report.kind == "organizations":
        by_code = {o.code: o for o in session.scalars(sa.select(Organization))}
        for row in rows:  # parents come before children: each row's parent exists by now
            v = row.values
            parent = by_code[v["parent_code"]]
            org = Organization(code=v["code"], name_zh=v["name_zh"],
                               name_en=v["name_en"] or v["name_zh"],
                               kind=KINDS[v["kind"].lower()], parent_id=parent.id)
            session.add(org)
            session.flush()
            org.path = f"{parent.path}{org.id}/"
            by_code[org.code] = org
        payload = {"kind": "organizations", "codes": [r.values["code"] for r in rows]}
    else:
        org_ids = dict(session.execute(sa.select(Organization.code, Organization.id)).all())
        created = []
        for row in rows:
            v = row.values
            person = Person(name=v["name"], email=v["email"],
                            organization_id=org_ids[v["organization_code"]],
                            is_party_member=v["party_member"].lower() not in _NO,
                            lang="en" if v["lang"].lower() in ("en", "英文") else "zh")
            session.add(person)
            session.flush()
            roles, _ = _roles(v["roles"])
            session.add_all([Position(person_id=person.id, organization_id=person.organization_id,
                                      role=role) for role in dict.fromkeys(roles)])
            created.append(person.id)
        payload = {"kind": "people", "person_ids": created}
    session.flush()
    history.append(session, history.EventDraft(
        action="directory_imported", actor=actor, occurred_at=now,
        payload={**payload, "rows": len(rows), "rejected": len(report.rejected)}))
    return len(rows)
