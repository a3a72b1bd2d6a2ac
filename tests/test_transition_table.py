"""The transition table is the whole workflow: check it on paper, then on both databases.

The pure checks read ``service.workflow.table`` alone (no database). The matrix drives one case
into every state of the table and tries *every* action there, as the flow, the campaign office
and the anonymous public: what the table does not list is refused as ``not_allowed_in_state``
and writes nothing; what it lists but the actor's role does not cover is refused as ``role``.
"""

from __future__ import annotations

import inspect
import re
from collections import Counter, deque

import pytest
import sqlalchemy as sa

from models import Case, Event, Notification
from service.errors import TransitionRefused
from service.workflow import diagram, engine, guards, roles, table
from service.workflow.roles import Actor
from tests import builders as b

ACTIONS = sorted({t.action for t in table.TRANSITIONS})
ALL_TABLE_STATES = [(stage, s) for stage, statuses in table.STATUSES.items() for s in statuses]
CLOSED = [("closed", s) for s in table.STATUSES["closed"]]
PUBLIC = Actor()


def _state_id(state: tuple[str, str]) -> str:
    return f"{state[0]}.{state[1]}"


# --- the table on paper --------------------------------------------------------------------------

def test_no_two_rows_share_a_stage_status_and_action():
    keys = Counter((t.stage, s, t.action) for t in table.TRANSITIONS for s in t.sources)
    duplicates = sorted(k for k, n in keys.items() if n > 1)
    assert duplicates == [], f"ambiguous rows (which one would apply?): {duplicates}"


def test_every_source_and_target_is_a_declared_status():
    known = set(ALL_TABLE_STATES)
    problems = []
    for t in table.TRANSITIONS:
        problems += [f"{t.action}: source {(t.stage, s)}" for s in t.sources
                     if (t.stage, s) not in known]
        problems += [f"{t.action}: target {target}" for target in t.possible_targets()
                     if target not in known]
        if t.choose_target is not None and not t.targets:
            problems.append(f"{t.action}: chooses its target but does not declare the choices")
        if not t.sources:
            problems.append(f"{t.action} at {t.stage}: no source status")
    assert table.INITIAL in known
    assert problems == []


def _leads_to(t: table.Transition, source: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """Where a row leads *from this source* (a decision inside a status stays put)."""
    return t.possible_targets() if t.target or t.targets else (source,)


def test_every_state_is_reachable_from_the_initial_state():
    reached, todo = {table.INITIAL}, deque([table.INITIAL])
    while todo:
        source = todo.popleft()
        for t in table.actions_from(*source):
            for target in _leads_to(t, source):
                if target not in reached:
                    reached.add(target)
                    todo.append(target)
    unreachable = [s for s in ALL_TABLE_STATES if s not in reached]
    assert unreachable == [], f"states no case can ever reach: {unreachable}"


@pytest.mark.parametrize("state", [s for s in ALL_TABLE_STATES if s[0] != "closed"],
                         ids=_state_id)
def test_every_open_state_can_lapse_at_rollover(state):
    lapse = table.find(*state, "lapse")
    assert lapse is not None, f"a case at {state} would outlive its period"
    assert lapse.target == ("closed", "lapsed")
    assert guards.period_ended in lapse.guards
    assert lapse.roles <= table.MACHINE


@pytest.mark.parametrize("state", CLOSED, ids=_state_id)
def test_closed_cases_accept_nothing(state):
    assert table.actions_from(*state) == []
    assert [a for a in ACTIONS if table.find(*state, a) is not None] == []


def test_every_row_names_known_roles_and_only_objections_are_public():
    problems = [f"{t.action} at {t.stage}: roles {sorted(t.roles)}" for t in table.TRANSITIONS
                if not t.roles or not t.roles <= set(roles.ROLES)]
    assert problems == []
    public = sorted({t.action for t in table.TRANSITIONS if "public" in t.roles})
    assert public == ["file_objection"], "the anonymous public may only file objections"


def test_every_guard_is_a_named_function_of_the_guards_module():
    problems = []
    for t in table.TRANSITIONS:
        for guard in t.guards:
            name = getattr(guard, "__name__", repr(guard))
            if not (inspect.isfunction(guard) and guard.__module__ == guards.__name__
                    and getattr(guards, name, None) is guard and not name.startswith("_")):
                problems.append(f"{t.action}: {name}")
            elif not (guard.__doc__ or "").strip():
                problems.append(f"{t.action}: {name} has no docstring saying why")
    assert problems == []


def test_every_row_with_an_input_uses_it():
    # The input is read by the effect, or (``decide``) by the choice of target; an input that
    # nothing reads would be validated and then silently dropped.
    unused = [f"{t.action} at {t.stage}" for t in table.TRANSITIONS
              if t.input is not None and t.effect is None and t.choose_target is None]
    assert unused == []
    # Effects that read ``ctx.input`` need an input model, or they would see None.
    blind = [f"{t.action} at {t.stage}" for t in table.TRANSITIONS
             if t.input is None and t.effect is not None
             and "ctx.input" in inspect.getsource(t.effect)]
    assert blind == []


EDGE = re.compile(r"^\s+(\w+) --> (\w+): (\w+) \[([\w/]+)\]$")


def _edges(text: str) -> set[tuple[str, str, str]]:
    return {m.group(1, 2, 3) for m in map(EDGE.match, text.splitlines()) if m}


def _expected_edges(include_lapse: bool) -> set[tuple[str, str, str]]:
    edges = set()
    for t in table.TRANSITIONS:
        if t.action == "lapse" and not include_lapse:
            continue
        for source in t.sources:
            for target in _leads_to(t, (t.stage, source)):
                if target != (t.stage, source):
                    edges.add((f"{t.stage}_{source}", f"{target[0]}_{target[1]}", t.action))
    return edges


def test_the_diagram_draws_every_state_changing_action():
    drawn = diagram.mermaid()
    assert drawn.startswith("stateDiagram-v2\n")
    assert f"[*] --> {table.INITIAL[0]}_{table.INITIAL[1]}" in drawn
    assert _edges(drawn) == _expected_edges(include_lapse=False)
    changing = {e[2] for e in _expected_edges(include_lapse=False)}
    assert {"submit", "approve", "return", "withdraw", "decide", "nominate"} <= changing
    missing = sorted(a for a in changing if re.search(rf": {a} \[", drawn) is None)
    assert missing == []
    assert _edges(diagram.mermaid(include_lapse=True)) == _expected_edges(include_lapse=True)


# --- the full (stage, status, action) matrix on both databases -----------------------------------

def _snapshot(session, case_id: int) -> tuple[int, int, int]:
    """What a refusal must leave alone: the case's version, the history, the outbox."""
    return tuple(session.execute(sa.select(
        sa.select(Case.version).where(Case.id == case_id).scalar_subquery(),
        sa.select(sa.func.count()).select_from(Event).scalar_subquery(),
        sa.select(sa.func.count()).select_from(Notification).scalar_subquery(),
    )).one())


def refusal(session, case_id: int, action: str, who: Actor, clock, *,
            before: tuple[int, int, int] | None = None, **kwargs) -> TransitionRefused:
    """Try an action that must be refused, inside a savepoint; check it wrote nothing.

    ``before`` is the snapshot to compare with, when the caller already took it."""
    before = before or _snapshot(session, case_id)
    savepoint = session.begin_nested()
    try:
        with pytest.raises(TransitionRefused) as refused:
            engine.apply(session, case_id=case_id, action=action, actor=who, clock=clock,
                         **kwargs)
        pending = [*session.new, *session.dirty, *session.deleted]
        assert pending == [], f"{action} by {who.label}: refused but left {pending} pending"
        assert _snapshot(session, case_id) == before, \
            f"{action} by {who.label}: refused but wrote (version, events, notifications)"
    finally:
        savepoint.rollback()
    return refused.value


def refusal_codes(session, case_id: int, action: str, who: Actor, clock, **kwargs
                  ) -> list[str]:
    """The reason codes of a refusal that wrote nothing."""
    return [r.code for r in refusal(session, case_id, action, who, clock, **kwargs).reasons]


@pytest.mark.parametrize("state", b.ALL_STATES, ids=_state_id)
def test_every_action_in_every_state(session, state):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.drive(session, b.unit_case(session, "supply-marketing"), state, clock)
    assert (case.stage, case.status) == state
    case_id, flow, office = case.id, b.FLOW, b.office(session)
    allowed = {t.action: t for t in table.actions_from(*state)}
    before = _snapshot(session, case_id)  # every attempt below is refused or rolled back
    assert set(allowed) == {a for a in ACTIONS if table.find(*state, a) is not None}

    for action in [*ACTIONS, "no_such_action"]:
        transition = table.find(*state, action)
        if transition is None:
            for who in (flow, office):
                codes = refusal_codes(session, case_id, action, who, clock, comment="why",
                                      before=before)
                assert codes == ["not_allowed_in_state"], f"{action} by {who.label}: {codes}"
            continue
        assert transition in allowed.values() and transition.stage == state[0]
        # Deny by default: holding no role the row names is refused before anything is read.
        for who, held in ((flow, {"flow", "public"}), (PUBLIC, {"public"})):
            if not held & transition.roles:
                codes = refusal_codes(session, case_id, action, who, clock, comment="why",
                                      before=before)
                assert codes == ["role"], f"{action} by {who.label} at {state}: {codes}"

    # The refusal tells the person what *is* possible now.
    message = refusal(session, case_id, "no_such_action", office, clock).reasons[0].message
    assert all(f"'{a}'" in message for a in allowed), message

    if "file_objection" in allowed:  # anyone may object to what is under public notice
        savepoint = session.begin_nested()
        try:
            outcome = engine.apply(session, case_id=case_id, action="file_objection",
                                   actor=PUBLIC, clock=clock, data={"body": "not true"})
            assert outcome.to_state == state and "objection_id" in outcome.payload
        finally:
            savepoint.rollback()


# --- deny by default: roles relative to the case -----------------------------------------------

STRANGERS = ("telecom.secretary",            # another enterprise's committee
             "supply-marketing.b1.secretary",  # a branch *below* the unit: not its superior
             "supply-marketing.b1.m1")         # a plain member of the enterprise


@pytest.mark.parametrize("username", STRANGERS)
def test_a_stranger_can_neither_draft_nor_decide_a_units_pledge(session, username):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.drive(session, b.unit_case(session, "supply-marketing"), ("pledge", "drafting"),
                   clock)
    stranger = b.actor(session, username)
    edit = {"summary": "mine now", "items": b.items_for(case)}
    assert refusal_codes(session, case.id, "edit_pledge", stranger, clock, data=edit) == ["role"]
    assert refusal_codes(session, case.id, "submit", stranger, clock) == ["role"]

    b.drive(session, case, ("pledge", "submitted"), clock)
    for action in ("approve", "return", "withdraw"):
        codes = refusal_codes(session, case.id, action, stranger, clock, comment="no")
        assert codes == ["role"], f"{username} {action}: {codes}"
    b.act(session, case, "approve", b.superior_of(session, case), clock)  # the superior can
    assert (case.stage, case.status) == ("pledge", "approved")


def test_machines_and_the_public_cannot_decide_a_pledge(session):
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.drive(session, b.unit_case(session, "supply-marketing"), ("pledge", "submitted"),
                   clock)
    assert refusal_codes(session, case.id, "approve", b.FLOW, clock) == ["role"]
    for t in table.actions_from("pledge", "submitted"):
        codes = refusal_codes(session, case.id, t.action, PUBLIC, clock, comment="no",
                              data={"body": "x"})
        assert codes == ["role"], f"the public could {t.action}: {codes}"
    assert refusal_codes(session, case.id, "file_objection", PUBLIC, clock,
                         data={"body": "x"}) == ["not_allowed_in_state"]
