"""Nothing but the engine writes a case's stage or status, and the engine writes all or nothing.

Three fences: a runtime listener refuses stray assignments to ``Case.stage``/``Case.status``;
a static scan refuses Core or SQL writes of the case table anywhere but the engine (the
listener cannot see those); and each ``apply`` either writes exactly one version bump and one
chained event, or — refused — nothing at all.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from models import Base, Case, ChainHead, Event, Pledge
from service.errors import InvalidInput, PledgeflowError, StaleVersion, TransitionRefused
from service.workflow import engine, table
from tests import builders as b

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("models", "service", "notifications", "flows")
CHOKE_POINT = "service/workflow/engine.py"


# --- (a) the runtime fence ----------------------------------------------------------------------

@pytest.fixture
def drafting_case(session):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.drive(session, b.unit_case(session, "supply-marketing"), ("pledge", "drafting"),
                   clock)
    return case, clock


@pytest.mark.parametrize("attribute", ["stage", "status"])
def test_assigning_a_loaded_cases_state_outside_the_engine_is_refused(session, drafting_case,
                                                                       attribute):
    case, clock = drafting_case
    with pytest.raises(engine.StatusWriteOutsideChokePoint):
        setattr(case, attribute, "closed" if attribute == "stage" else "lapsed")
    with pytest.raises(engine.StatusWriteOutsideChokePoint):
        case.stage, case.status = "closed", "lapsed"
    assert (case.stage, case.status) == ("pledge", "drafting")
    assert case not in session.dirty
    session.expire(case)
    assert (case.stage, case.status) == ("pledge", "drafting")
    # The fence is only for outsiders: the engine itself still moves the case.
    b.act(session, case, "edit_pledge", b.subject_of(session, case), clock,
          data={"summary": "s", "items": b.items_for(case)})
    b.act(session, case, "submit", b.subject_of(session, case), clock)
    assert (case.stage, case.status) == ("pledge", "submitted")


@pytest.mark.parametrize("state", [{"stage": "pledge", "status": "pending"},
                                   {"status": "pending"}, {"stage": "closed"}],
                         ids=lambda s: "+".join(s))
def test_constructing_a_case_with_a_state_outside_the_engine_is_refused(state):
    with pytest.raises(engine.StatusWriteOutsideChokePoint):
        Case(period_id=1, subject_kind="organization", subject_key="organization:1",
             organization_id=1, **state)
    Case(subject_kind="organization", organization_id=1)  # no state: a harmless probe


# --- (b) the static fence -----------------------------------------------------------------------

_Q = r"""\\?["'`]?"""  # an optional (escaped) quote around the table name
SOURCE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # sa.update(Case), insert(Case), pg_insert(Case), bulk_update_mappings(Case, …)
    ("Core update/insert of Case", re.compile(r"\b\w*(?:update|insert|upsert)\w*\(\s*Case\b")),
    ("Core update/insert of Case's table", re.compile(r"\bCase\.__table__\.(?:update|insert)\b")),
    ("a lightweight table named case", re.compile(r"\btable\(\s*[\"']case[\"']")),
    ("legacy Query.update of Case", re.compile(r"\bquery\(\s*Case\b[^\n]*\.update\(")),
    ("SQL UPDATE of the case table",
     re.compile(rf"\bUPDATE\s+{_Q}case{_Q}\s+SET\b", re.IGNORECASE)),
    ("SQL INSERT into the case table",
     re.compile(rf"\bINSERT\s+(?:OR\s+\w+\s+)?INTO\s+{_Q}case{_Q}[\s(]", re.IGNORECASE)),
)
STATE_ATTRIBUTES = ("stage", "status")


def _looks_like_a_case(node: ast.expr) -> bool:
    return re.search(r"case", ast.unparse(node), re.IGNORECASE) is not None


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        found = [node.target]
    else:
        return []
    flat: list[ast.expr] = []
    while found:
        target = found.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            found.extend(target.elts)
        elif isinstance(target, ast.Starred):
            found.append(target.value)
        else:
            flat.append(target)
    return flat


def _state_writes(node: ast.AST) -> list[str]:
    """How this node writes a case's stage/status from Python (usually not at all)."""
    # ``.stage`` belongs to cases alone; ``.status`` also to notices, periods, rounds…
    found = [f"assigns {ast.unparse(t)}" for t in _targets(node)
             if isinstance(t, ast.Attribute) and (
                 t.attr == "stage" or (t.attr == "status" and _looks_like_a_case(t.value)))]
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", None)
        if name == "Case" and {k.arg for k in node.keywords} & set(STATE_ATTRIBUTES):
            found.append("constructs a Case with a stage/status")
        if name == "setattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in STATE_ATTRIBUTES and _looks_like_a_case(node.args[0]):
            found.append(f"setattr(…, {node.args[1].value!r})")
    return found


def scan_for_case_writes(path: Path, shown_as: str) -> list[str]:
    """Every place in one Python file that writes the case table or a case's stage/status."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    for what, pattern in SOURCE_PATTERNS:
        found += [(text.count("\n", 0, m.start()) + 1, what) for m in pattern.finditer(text)]
    for node in ast.walk(ast.parse(text, filename=shown_as)):
        found += [(node.lineno, why) for why in _state_writes(node)]
    return [f"{shown_as}:{line}: {what}: {lines[line - 1].strip()}"
            for line, what in sorted(set(found))]


def _product_files() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def test_only_the_engine_writes_the_case_table_or_a_case_state():
    files = _product_files()
    shown = {p: p.relative_to(ROOT).as_posix() for p in files}
    assert {"service/commendation.py", "service/periods.py", "notifications/outbox.py",
            "models/case.py", CHOKE_POINT} <= set(shown.values()), "the scan missed a layer"
    offences = [o for p in files if shown[p] != CHOKE_POINT
                for o in scan_for_case_writes(p, shown[p])]
    assert not offences, (
        "only service/workflow/engine.py (the choke point) may write the case table or a "
        "case's stage/status; go through engine.apply instead of:\n  " + "\n  ".join(offences))


def test_the_scan_recognises_the_engines_own_writes():
    # If the patterns drifted from how the code writes, the scan above would pass vacuously.
    offences = scan_for_case_writes(ROOT / CHOKE_POINT, CHOKE_POINT)
    assert any("Core update/insert of Case" in o and "sa.insert(Case)" in o for o in offences)
    assert any("assigns case.stage" in o for o in offences)
    assert any("assigns case.status" in o for o in offences)


STRAY_WRITES = [
    'session.execute(sa.update(Case).values(status="x"))',
    "session.execute(update(Case).where(Case.id == 1).values(stage='closed'))",
    "session.execute(sa.insert(Case), rows)",
    "session.execute(pg_insert(Case).values(rows).on_conflict_do_nothing())",
    "session.bulk_update_mappings(Case, [{'id': 1, 'status': 'x'}])",
    "session.execute(Case.__table__.update().values(status='x'))",
    "session.query(Case).filter_by(id=1).update({'status': 'x'})",
    """session.execute(sa.text('UPDATE "case" SET status = :s'), {"s": "x"})""",
    'session.execute(sa.text("update case set stage = \'closed\'"))',
    "conn.exec_driver_sql('INSERT INTO case (stage, status) VALUES (1, 2)')",
    'case.status = "lapsed"',
    'ctx.case.stage = "closed"',
    "case.stage, case.status = after",
    "self.case.status: str = 'x'",
    "row.stage = 'closed'",
    "setattr(case, 'status', 'x')",
    'session.add(Case(period_id=1, stage="pledge", status="pending"))',
]
HARMLESS = [
    'period.status = "open"',
    "ctx.open_notice.status = 'closed'",
    "commendation.status, commendation.decided_at = 'decided', now",
    'session.execute(sa.update(PublicNotice).values(status="withdrawn"))',
    "session.execute(sa.insert(Notification), rows)",
    "open_ = session.scalars(sa.select(Case).where(Case.status == 'x')).all()",
    "if case.status == 'x' and case.stage != 'closed':\n    pass",
    "ctx.payload.update(case_id=1, status='kept')",
    'Case(subject_kind="organization", organization_id=1)',
    "# cases are updated only by the engine",
]


@pytest.mark.parametrize("line", STRAY_WRITES)
def test_the_scan_catches_a_stray_write(tmp_path, line):
    stray = tmp_path / "stray.py"
    stray.write_text(f'"""A module."""\n\nimport sqlalchemy as sa\n\n\n{line}\n', encoding="utf-8")
    offences = scan_for_case_writes(stray, "service/stray.py")
    assert offences, f"not caught: {line}"
    assert all(o.startswith("service/stray.py:6: ") for o in offences), offences


@pytest.mark.parametrize("line", HARMLESS)
def test_the_scan_leaves_other_writes_alone(tmp_path, line):
    harmless = tmp_path / "harmless.py"
    harmless.write_text(f"{line}\n", encoding="utf-8")
    assert scan_for_case_writes(harmless, "service/harmless.py") == []


# --- (c) all or nothing --------------------------------------------------------------------------

def _database_state(session, case_id: int) -> dict[str, object]:
    """Row counts of every table, the case's row, its pledge and the chain head."""
    counts = session.execute(sa.select(*(
        sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name)
        for t in Base.metadata.sorted_tables))).one()._asdict()
    case = session.execute(sa.select(Case.__table__).where(Case.id == case_id)).one()
    pledge = session.execute(sa.select(Pledge.__table__).where(Pledge.case_id == case_id)).all()
    head = session.execute(sa.select(ChainHead.__table__)).all()
    return {"counts": counts, "case": tuple(case), "pledge": [tuple(r) for r in pledge],
            "head": [tuple(r) for r in head]}


STALE = object()  # stands for "the version before the current one"


@pytest.mark.parametrize("state, action, who, kwargs, error, codes", [
    pytest.param("drafting", "submit", "subject", {}, TransitionRefused, ["no_items"],
                 id="submit_an_empty_pledge"),
    pytest.param("drafting", "approve", "superior", {}, TransitionRefused,
                 ["not_allowed_in_state"], id="approve_a_draft"),
    pytest.param("drafting", "edit_pledge", "subject",
                 {"data": {"items": [{"criterion": "no_such_criterion", "target": "t"}]}},
                 InvalidInput, ["unknown_criterion"], id="edit_with_an_unknown_criterion"),
    pytest.param("submitted", "approve", "subject", {}, TransitionRefused, ["role"],
                 id="approve_ones_own_pledge"),
    pytest.param("submitted", "return", "superior", {"comment": "  "}, TransitionRefused,
                 ["comment_required"], id="return_without_a_comment"),
    pytest.param("submitted", "approve", "superior", {"expected_version": STALE}, StaleVersion,
                 [], id="approve_a_stale_version"),
])
def test_a_refused_transition_writes_nothing(session, state, action, who, kwargs, error, codes):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, ("pledge", "drafting"), clock)
    subject, superior = b.subject_of(session, case), b.superior_of(session, case)
    if state == "submitted":
        b.act(session, case, "edit_pledge", subject, clock,
              data={"summary": "s", "items": b.items_for(case)})
        b.act(session, case, "submit", subject, clock)
    if kwargs.get("expected_version") is STALE:
        kwargs = {**kwargs, "expected_version": case.version - 1}
    session.flush()
    assert not (session.new or session.dirty or session.deleted)
    version, before = case.version, _database_state(session, case.id)

    with pytest.raises(PledgeflowError) as refused:
        engine.apply(session, case_id=case.id, action=action, clock=clock,
                     actor=subject if who == "subject" else superior, **kwargs)
    assert type(refused.value) is error
    assert [r.code for r in refused.value.reasons] == codes

    pending = [*session.new, *session.dirty, *session.deleted]
    assert pending == [], f"refused, yet the session would still write {pending}"
    assert _database_state(session, case.id) == before
    # The session stays usable: the next legitimate step goes through.
    if state == "submitted":
        b.act(session, case, "approve", superior, clock)
    else:
        b.act(session, case, "edit_pledge", subject, clock,
              data={"summary": "s", "items": b.items_for(case)})
    assert case.version == version + 1


@pytest.fixture
def applied(monkeypatch):
    """Check every ``engine.apply`` of the test: one version step, one chained event."""
    seen: list[tuple[str, int]] = []
    real_apply = engine.apply

    def checked_apply(s, *, case_id, action, **kwargs):  # type: ignore[no-untyped-def]
        version = s.scalar(sa.select(Case.version).where(Case.id == case_id))
        head_seq, head_hash = s.execute(sa.select(ChainHead.seq, ChainHead.hash)).one()
        outcome = real_apply(s, case_id=case_id, action=action, **kwargs)
        new = s.scalars(sa.select(Event).where(Event.seq > head_seq).order_by(Event.seq)).all()
        assert [(e.seq, e.prev_hash, e.case_id, e.action) for e in new] == [
            (head_seq + 1, head_hash, case_id, action)], f"{action}: not one chained event"
        assert s.execute(sa.select(ChainHead.seq, ChainHead.hash)).one() == (
            new[0].seq, new[0].hash)
        transition = table.find(*outcome.from_state, action)
        assert transition is not None
        step = s.scalar(sa.select(Case.version).where(Case.id == case_id)) - version
        assert step == (1 if transition.bumps_version else 0), f"{action}: version +{step}"
        assert outcome.version == version + step and outcome.event_seq == new[0].seq
        seen.append((action, step))
        return outcome

    monkeypatch.setattr(engine, "apply", checked_apply)
    return seen


@pytest.mark.parametrize("target", [("closed", "commended"), ("evaluation", "inconclusive"),
                                    ("pledge", "returned")], ids=lambda s: f"{s[0]}.{s[1]}")
def test_each_successful_transition_steps_the_version_once_and_chains_one_event(
        session, applied, target):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.drive(session, b.unit_case(session, "supply-marketing"), target, clock)
    assert (case.stage, case.status) == target
    actions = {a for a, _ in applied}
    assert {"open_pledge", "edit_pledge", "submit"} <= actions
    if target[0] != "pledge":
        ballots = [step for a, step in applied if a == "cast_ballot"]
        assert ballots and set(ballots) == {0}, "a ballot must not move the case's version"
        assert {"record_fulfilment", "open_evaluation"} <= actions
    assert case.version == 1 + sum(step for _, step in applied)
