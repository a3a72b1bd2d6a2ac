"""The tamper-evident history: a chain of real events verifies; every kind of tampering is found
at the right event; exports carry the head; ballots stay anonymous; appends are serialised.

Events are made by driving real cases through the engine (``builders.drive``); tampering is done
the way an intruder with database access would, with raw SQL around the ORM.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import (
    BallotCount,
    ChainHead,
    EvaluationRound,
    EvaluatorAssignment,
    Event,
    Notification,
    Period,
)
from models.event import GENESIS_HASH
from service import history
from service.history import HASHED_FIELDS, EventDraft
from service.rules import SCALES
from service.workflow.roles import Actor
from tests import builders as b

# --- helpers -----------------------------------------------------------------------------------


def _events(session: Session, *where: Any) -> list[Event]:
    session.expunge_all()  # never trust objects loaded before a raw-SQL change
    return list(session.scalars(sa.select(Event).where(*where).order_by(Event.seq)))


def _event_of(session: Session, case_id: int, action: str) -> Event:
    return session.scalars(sa.select(Event).where(Event.case_id == case_id,
                                                  Event.action == action)).one()


def _tamper(session: Session, statement: Any) -> None:
    session.execute(statement.execution_options(synchronize_session=False))
    session.flush()
    session.expunge_all()


def _last_seq(session: Session) -> int:
    return session.scalar(sa.select(sa.func.max(Event.seq))) or 0


def _reference_hash(fields: dict[str, Any]) -> str:
    """An independent re-implementation of the documented hash (for exports and the spec)."""
    body = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in fields.items()
            if k in HASHED_FIELDS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def _draft(n: int, **overrides: Any) -> EventDraft:
    values: dict[str, Any] = dict(action="test_note", actor=b.FLOW,
                                  occurred_at=datetime(2010, 6, 1, 8, 0, n, tzinfo=UTC),
                                  comment=f"note {n}", payload={"n": n})
    values.update(overrides)
    return EventDraft(**values)


@pytest.fixture
def chain(session: Session) -> dict[str, Any]:
    """Period 2010 opened and one unit's pledge walked to done: a chain of real events."""
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, ("pledge", "done"), clock)
    assert history.verify(session) is None
    return {"case_id": case.id, "clock": clock, "last": _last_seq(session)}


# --- an intact chain ---------------------------------------------------------------------------


def test_a_chain_of_real_events_verifies_link_by_link(session: Session) -> None:
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    first_transition = _last_seq(session) + 1
    b.drive(session, case, ("evaluation", "announced"), clock)

    transitions = _events(session, Event.seq >= first_transition)
    assert len(transitions) >= 15  # one case's transitions and ballots, after 100+ openings
    assert {"submit", "approve", "record_review", "cast_ballot", "close_round",
            "announce_results"} <= {e.action for e in transitions}
    everything = _events(session)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    prev = GENESIS_HASH
    for event in everything:  # reloaded from the database: the stored rows still hash right
        assert event.prev_hash == prev
        assert history.event_hash({k: getattr(event, k) for k in HASHED_FIELDS}) == event.hash
        assert _reference_hash({k: getattr(event, k) for k in HASHED_FIELDS}) == event.hash
        prev = event.hash
    assert history.head(session) == (everything[-1].seq, everything[-1].hash)
    assert history.verify(session) is None
    assert history.verify(session, expected_head=everything[-1].hash) is None
    assert history.verify(session, expected_head=everything[len(everything) // 2].hash) is None


# --- the canonical form and the hash -----------------------------------------------------------

BASE_FIELDS: dict[str, Any] = {
    "seq": 7, "case_id": 3, "period_id": 1, "stage": "pledge", "from_status": "submitted",
    "to_status": "approved", "action": "approve", "actor_person_id": 12, "actor_flow": None,
    "occurred_at": datetime(2010, 6, 1, 2, 30, tzinfo=UTC), "comment": "同意",
    "payload": {"items": [1, 2], "note": "好"}, "prev_hash": "a" * 64,
}
CHANGED: dict[str, Any] = {
    "seq": 8, "case_id": 4, "period_id": 2, "stage": "review", "from_status": "returned",
    "to_status": "returned", "action": "return", "actor_person_id": 13, "actor_flow": "test",
    "occurred_at": datetime(2010, 6, 1, 2, 30, 1, tzinfo=UTC), "comment": "同意。",
    "payload": {"items": [2, 1], "note": "好"}, "prev_hash": "b" * 64,
}


def test_the_canonical_form_is_sorted_compact_utf8_json() -> None:
    fields = {"b": 1, "a": "好", "t": datetime(2010, 6, 1, tzinfo=UTC), "n": None}
    assert history.canonical(fields) == \
        '{"a":"好","b":1,"n":null,"t":"2010-06-01T00:00:00+00:00"}'.encode()
    shuffled = dict(reversed(list(BASE_FIELDS.items())))
    assert history.canonical(shuffled) == history.canonical(dict(BASE_FIELDS))
    assert history.event_hash(shuffled) == history.event_hash(dict(BASE_FIELDS))
    assert history.event_hash(dict(BASE_FIELDS)) == _reference_hash(BASE_FIELDS)
    # the stored hash itself and any field not in the chain are left out of the hash
    assert history.event_hash({**BASE_FIELDS, "hash": "x", "extra": 1}) == \
        history.event_hash(dict(BASE_FIELDS))


def test_every_column_of_an_event_but_its_own_hash_is_hashed() -> None:
    assert set(HASHED_FIELDS) == {c.name for c in Event.__table__.columns} - {"hash"}
    assert set(CHANGED) == set(BASE_FIELDS) == set(HASHED_FIELDS)


@pytest.mark.parametrize("field", HASHED_FIELDS)
def test_changing_any_one_hashed_field_changes_the_hash(field: str) -> None:
    assert CHANGED[field] != BASE_FIELDS[field]
    assert history.event_hash({**BASE_FIELDS, field: CHANGED[field]}) != \
        history.event_hash(dict(BASE_FIELDS))


def test_the_same_instant_in_another_time_zone_hashes_the_same() -> None:
    """Instants are hashed in UTC: the database gives them back in UTC, whatever came in."""
    local = BASE_FIELDS["occurred_at"].astimezone(ZoneInfo("Asia/Shanghai"))
    assert history.event_hash({**BASE_FIELDS, "occurred_at": local}) == \
        history.event_hash(dict(BASE_FIELDS))


def test_an_event_appended_with_a_local_time_still_verifies(session: Session) -> None:
    shanghai = datetime(2010, 6, 1, 9, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    event = history.append(session, _draft(1, occurred_at=shanghai))
    assert history.verify(session) is None
    (stored,) = _events(session, Event.seq == event.seq)
    assert stored.occurred_at == shanghai and stored.hash == event.hash


# --- tampering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "forged"), [
    ("comment", "approved after a phone call"),
    ("payload", {"forged": True}),
    ("to_status", "returned"),
    ("occurred_at", datetime(2010, 5, 1, tzinfo=UTC)),
    ("actor_person_id", None),
])
def test_a_modified_event_is_the_first_break(session: Session, chain: dict[str, Any],
                                            column: str, forged: Any) -> None:
    seq = _event_of(session, chain["case_id"], "approve").seq
    assert seq < chain["last"]
    _tamper(session, sa.update(Event).where(Event.seq == seq).values({column: forged}))

    broken = history.verify(session)
    assert broken is not None
    assert (broken.seq, "modified" in broken.problem) == (seq, True)


def test_a_deleted_event_is_reported_missing(session: Session, chain: dict[str, Any]) -> None:
    seq = _event_of(session, chain["case_id"], "submit").seq
    _tamper(session, sa.delete(Event).where(Event.seq == seq))

    broken = history.verify(session)
    assert broken is not None
    assert broken.seq == seq and "missing" in broken.problem


def test_deleting_the_first_event_is_found_too(session: Session, chain: dict[str, Any]) -> None:
    _tamper(session, sa.delete(Event).where(Event.seq == 1))
    broken = history.verify(session)
    assert broken is not None and broken.seq == 1


def test_two_reordered_events_break_at_the_earlier(session: Session,
                                                  chain: dict[str, Any]) -> None:
    seq = _event_of(session, chain["case_id"], "approve").seq
    temp = -1  # seq and prev_hash are unique: move one out of the way first
    _tamper(session, sa.update(Event).where(Event.seq == seq).values(seq=temp))
    _tamper(session, sa.update(Event).where(Event.seq == seq + 1).values(seq=seq))
    _tamper(session, sa.update(Event).where(Event.seq == temp).values(seq=seq + 1))
    assert [e.action for e in _events(session, Event.seq.in_((seq, seq + 1)))] == \
        ["publish", "approve"]

    broken = history.verify(session)
    assert broken is not None
    assert broken.seq == seq and "link" in broken.problem


def test_a_rewritten_chain_passes_alone_but_not_against_an_exported_head(
        session: Session, chain: dict[str, Any]) -> None:
    """An intruder who recomputes every hash after their change is caught by the export."""
    exported_seq, exported_head = history.head(session)
    seq = _event_of(session, chain["case_id"], "approve").seq
    prev = _events(session, Event.seq == seq - 1)[0].hash
    for event in _events(session, Event.seq >= seq):
        fields = {k: getattr(event, k) for k in HASHED_FIELDS}
        fields.update(prev_hash=prev, comment="forged" if event.seq == seq else event.comment)
        prev = history.event_hash(fields)
        _tamper(session, sa.update(Event).where(Event.seq == event.seq).values(
            comment=fields["comment"], prev_hash=fields["prev_hash"], hash=prev))
    _tamper(session, sa.update(ChainHead).values(hash=prev))

    assert history.verify(session) is None
    broken = history.verify(session, expected_head=exported_head)
    assert broken is not None
    assert broken.seq == exported_seq and "exported head" in broken.problem


def test_a_truncated_tail_is_caught_only_by_the_exported_head(session: Session,
                                                             chain: dict[str, Any]) -> None:
    exported_seq, exported_head = history.head(session)
    older_head = _events(session, Event.seq == exported_seq - 10)[0].hash
    keep = exported_seq - 3
    kept_hash = _events(session, Event.seq == keep)[0].hash
    _tamper(session, sa.delete(Event).where(Event.seq > keep))
    _tamper(session, sa.update(ChainHead).where(ChainHead.id == 1).values(seq=keep,
                                                                          hash=kept_hash))

    assert history.verify(session) is None  # no link is broken: truncation is invisible alone
    assert history.verify(session, expected_head=older_head) is None  # an older export is fine
    broken = history.verify(session, expected_head=exported_head)
    assert broken is not None
    assert broken.seq == keep and "exported head" in broken.problem


def test_a_truncated_tail_without_rewinding_the_head_is_caught(session: Session,
                                                              chain: dict[str, Any]) -> None:
    keep = chain["last"] - 2
    _tamper(session, sa.delete(Event).where(Event.seq > keep))
    broken = history.verify(session)
    assert broken is not None
    assert broken.seq == keep and "head" in broken.problem


@pytest.mark.parametrize("change", [{"hash": "f" * 64}, {"seq": 10**6}, {"seq": 1}],
                         ids=["hash", "seq-ahead", "seq-behind"])
def test_an_altered_head_row_is_reported(session: Session, chain: dict[str, Any],
                                        change: dict[str, Any]) -> None:
    _tamper(session, sa.update(ChainHead).where(ChainHead.id == 1).values(change))
    broken = history.verify(session)
    assert broken is not None
    assert broken.seq == chain["last"] and "head" in broken.problem


def test_a_head_exported_from_an_empty_chain_is_on_every_chain(session: Session) -> None:
    assert history.head(session) == (0, GENESIS_HASH)
    history.append_many(session, [_draft(1), _draft(2)])
    assert history.verify(session, expected_head=GENESIS_HASH) is None
    broken = history.verify(session, expected_head="e" * 64)  # a head never on this chain
    assert broken is not None and broken.seq == 2


# --- exports -----------------------------------------------------------------------------------


@pytest.fixture
def two_periods(session: Session) -> dict[str, Any]:
    """Events of 2010, with events of another period and of no period interleaved."""
    clock = b.clock_at(b.period(session).starts_on)
    p2010 = b.opened_period(session, clock)
    other = session.scalars(sa.select(Period).where(Period.id != p2010.id)
                            .order_by(Period.sequence)).first()
    assert other is not None
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, ("pledge", "submitted"), clock)
    history.append(session, _draft(1, period_id=other.id))
    history.append(session, _draft(2))
    b.drive(session, case, ("pledge", "done"), clock)
    history.append(session, _draft(3, period_id=other.id))
    expected = [e.seq for e in _events(session, Event.period_id == p2010.id)]
    return {"period_id": p2010.id, "other_id": other.id, "seqs": expected}


def test_a_jsonl_export_has_exactly_the_periods_events_and_the_head(
        session: Session, two_periods: dict[str, Any]) -> None:
    out = io.StringIO()
    count, head_hash = history.export(session, out, period_id=two_periods["period_id"],
                                      fmt="jsonl")
    *lines, last = [json.loads(line) for line in out.getvalue().splitlines()]

    assert [line["seq"] for line in lines] == two_periods["seqs"]
    assert count == len(lines) > 100
    assert {line["period_id"] for line in lines} == {two_periods["period_id"]}
    for line in lines:
        assert set(line) == {*HASHED_FIELDS, "hash"}
        assert _reference_hash(line) == line["hash"]
    seq, expected_head = history.head(session)
    assert last == {"head": {"seq": seq, "hash": expected_head, "events": count}}
    assert head_hash == expected_head
    assert seq > lines[-1]["seq"]  # the head is the whole chain's, past this period's events


def _from_csv(row: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
    for k in ("seq", "case_id", "period_id", "actor_person_id"):
        fields[k] = int(fields[k]) if fields[k] is not None else None
    fields["payload"] = json.loads(row["payload"])
    return fields


def test_a_csv_export_has_exactly_the_periods_events_and_the_head(
        session: Session, two_periods: dict[str, Any]) -> None:
    out = io.StringIO()
    count, head_hash = history.export(session, out, period_id=two_periods["period_id"],
                                      fmt="csv")
    header, *rows, last = list(csv.reader(io.StringIO(out.getvalue())))

    assert header == [*HASHED_FIELDS, "hash"]
    events = [_from_csv(dict(zip(header, row, strict=True))) for row in rows]
    assert [e["seq"] for e in events] == two_periods["seqs"]
    assert count == len(events)
    for event in events:
        assert _reference_hash(event) == event["hash"]
    seq, expected_head = history.head(session)
    assert last == ["#head", str(seq), expected_head, str(count)]
    assert head_hash == expected_head


def test_an_export_of_a_period_without_events_still_carries_the_head(
        session: Session, two_periods: dict[str, Any]) -> None:
    empty = session.scalars(sa.select(Period.id).where(
        Period.id.not_in((two_periods["period_id"], two_periods["other_id"])))).first()
    assert empty is not None
    out = io.StringIO()
    assert history.export(session, out, period_id=empty, fmt="jsonl") == \
        (0, history.head(session)[1])
    assert out.getvalue().count("\n") == 1 and '"head"' in out.getvalue()


@pytest.mark.parametrize("fmt", ["xml", "JSONL", ""])
def test_an_unknown_export_format_is_refused_before_writing(session: Session, fmt: str) -> None:
    history.append(session, _draft(1, period_id=b.period(session).id))
    out = io.StringIO()
    with pytest.raises(ValueError, match="format"):
        history.export(session, out, period_id=b.period(session).id, fmt=fmt)
    assert out.getvalue() == ""


# --- anonymity ---------------------------------------------------------------------------------


def _strings(value: Any) -> set[str]:
    """Every key and string value inside a JSON document."""
    if isinstance(value, dict):
        return set(map(str, value)) | set().union(*map(_strings, value.values()))
    if isinstance(value, list):
        return set().union(*map(_strings, value))
    return {value} if isinstance(value, str) else set()


def test_ballot_answers_appear_in_no_event_or_notification(session: Session) -> None:
    clock = b.clock_at(b.period(session).starts_on)
    b.opened_period(session, clock)
    case = b.unit_case(session, "supply-marketing")
    b.drive(session, case, ("evaluation", "voting"), clock)
    round_ = session.scalars(sa.select(EvaluationRound).where(
        EvaluationRound.case_id == case.id)).one()
    voters = session.scalars(sa.select(EvaluatorAssignment.person_id).where(
        EvaluatorAssignment.round_id == round_.id).order_by(EvaluatorAssignment.id)).all()
    assert len(voters) >= 2
    options = [o.code for o in SCALES[round_.scale].options]
    before_votes = _last_seq(session)
    for n, voter in enumerate(voters):  # every option is chosen by someone
        b.act(session, case, "cast_ballot", Actor(person_id=voter), clock,
              data={"answers": {c: options[(n + i) % len(options)]
                                for i, c in enumerate(round_.criteria)}})
    b.act(session, case, "close_round", b.FLOW, clock)
    b.act(session, case, "announce_results", b.FLOW, clock)

    boxes = session.scalars(sa.select(BallotCount).where(BallotCount.round_id == round_.id)).all()
    for criterion in round_.criteria:  # every voter is counted once per criterion
        assert sum(b.count for b in boxes if b.criterion == criterion) == len(voters)
    assert {b.option for b in boxes} == set(options)
    secrets = set(options)

    events = _events(session, sa.or_(Event.case_id == case.id, Event.seq > before_votes))
    assert sum(e.action == "cast_ballot" for e in events) == len(voters)
    for event in events:
        assert not (_strings(event.payload) | {event.comment or ""}) & secrets, event.action
        assert not any(s in json.dumps(event.payload) for s in map(str, secrets)), event.action
    notifications = session.scalars(sa.select(Notification).where(
        Notification.case_id == case.id)).all()
    assert notifications
    for note in notifications:
        assert not _strings(note.context) & secrets, note.template


def test_the_ballot_box_keeps_only_totals_that_cannot_link_a_choice_to_a_person(db: Any) -> None:
    inspector = sa.inspect(db.engine)
    assert "ballot" not in inspector.get_table_names()  # no row per ballot to trace back
    columns = {c["name"] for c in inspector.get_columns("ballot_count")}
    assert columns == {"round_id", "criterion", "option", "count"}
    linking = ("person", "voter", "assignment", "account", "user", "_at", "time", "date",
               "created", "seq", "order", "position", "id")
    assert not [c for c in columns - {"round_id"} if any(word in c for word in linking)]
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("ballot_count")] == \
        ["evaluation_round"]
    # who voted is kept apart and points at no ballot
    receipt = {c["name"] for c in inspector.get_columns("ballot_receipt")}
    assert receipt == {"round_id", "assignment_id"}
    assert "ballot" not in {fk["referred_table"]
                            for fk in inspector.get_foreign_keys("ballot_receipt")}


# --- appending ---------------------------------------------------------------------------------


def test_append_many_links_contiguous_events_under_the_head(session: Session,
                                                           chain: dict[str, Any]) -> None:
    start_seq, start_hash = history.head(session)
    made = history.append_many(session, [_draft(n) for n in range(5)])

    assert [e.seq for e in made] == list(range(start_seq + 1, start_seq + 6))
    assert [e.prev_hash for e in made] == [start_hash, *(e.hash for e in made[:-1])]
    assert history.head(session) == (made[-1].seq, made[-1].hash)
    stored = _events(session, Event.seq > start_seq)
    assert [(e.seq, e.prev_hash, e.hash, e.comment) for e in stored] == \
        [(e.seq, e.prev_hash, e.hash, e.comment) for e in made]
    assert history.append_many(session, []) == []
    assert history.head(session) == (made[-1].seq, made[-1].hash)
    assert history.verify(session) is None


@pytest.mark.parametrize("overrides", [
    {},
    {"comment": "同意。\"引号\"\\ 和\n换行", "payload": {"意见": ["好", 2, None], "a": {"b": 1.5}}},
    {"comment": None, "payload": None, "case_id": None, "stage": None, "to_status": None},
    {"actor": Actor(person_id=1), "occurred_at": datetime(2010, 6, 1, 16, 0, 0, 250_000,
                                                           tzinfo=ZoneInfo("Asia/Shanghai"))},
], ids=["plain", "escapes-and-unicode", "nulls", "person-and-local-time"])
def test_one_appended_event_hashes_as_event_hash_says(session: Session, chain: dict[str, Any],
                                                      overrides: dict[str, Any]) -> None:
    """On PostgreSQL one event is hashed by the database (``_APPEND_ONE``): whatever the
    content, it must hash the canonical form ``event_hash`` does, and link to the head."""
    start_seq, start_hash = history.head(session)
    made = history.append(session, _draft(1, **overrides))

    assert (made.seq, made.prev_hash) == (start_seq + 1, start_hash)
    (stored,) = _events(session, Event.seq == made.seq)
    assert stored.hash == made.hash
    assert history.event_hash({k: getattr(stored, k) for k in HASHED_FIELDS}) == made.hash
    assert _reference_hash({k: getattr(stored, k) for k in HASHED_FIELDS}) == made.hash
    assert history.head(session) == (made.seq, made.hash)
    assert history.verify(session) is None


def _race(writers: int, transactions: int, fresh_db: Any,
          append: Callable[[Session, int, int], Any]) -> None:
    """``writers`` threads released together, each running ``append(session, writer, n)`` in
    ``transactions`` transactions of its own; fails with every writer's error."""
    barrier, errors = threading.Barrier(writers), []

    def write(w: int) -> None:
        try:
            barrier.wait()
            for n in range(transactions):
                with fresh_db.factory() as s, s.begin():
                    append(s, w, n)
        except Exception as exc:  # reported below, with the writer
            errors.append(f"writer {w}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors


def test_concurrent_single_appends_stay_one_unbroken_chain(fresh_db: Any) -> None:
    """One-event appends racing from the very first event (no head row yet), as the
    engine's transitions do: each takes the next seq and links to the one before."""
    writers, each = 4, 10
    _race(writers, each, fresh_db,
          lambda s, w, n: history.append(s, _draft(n, comment=f"w{w} #{n}")))
    with fresh_db.factory() as s:
        assert history.verify(s) is None
        comments = s.scalars(sa.select(Event.comment).order_by(Event.seq)).all()
        assert sorted(comments) == sorted(f"w{w} #{n}" for w in range(writers)
                                          for n in range(each))


def test_concurrent_appends_stay_one_unbroken_chain(fresh_db: Any) -> None:
    """Writers racing from the very first event (no head row yet) serialise on the head."""
    writers, batches, size = 4, 5, 3
    _race(writers, batches, fresh_db, lambda s, w, n: history.append_many(s, [
        _draft(0, comment=f"w{w} b{n} #{i}", occurred_at=datetime(
            2010, 6, 1, tzinfo=UTC) + timedelta(seconds=i)) for i in range(size)]))
    with fresh_db.factory() as s:
        assert history.verify(s) is None
        events = s.scalars(sa.select(Event).order_by(Event.seq)).all()
        assert [e.seq for e in events] == list(range(1, writers * batches * size + 1))
        # each batch went in whole, in order, with nobody else's events inside it
        for start in range(0, len(events), size):
            labels = [e.comment.rsplit(" #", 1) for e in events[start:start + size]]
            assert [label[1] for label in labels] == [str(i) for i in range(size)]
            assert len({label[0] for label in labels}) == 1

