"""The tamper-evident history: append, verify, export.

Every event's hash is SHA-256 over the canonical JSON (sorted keys, no spaces, UTF-8) of its
fields *including the previous event's hash*, so changing, deleting or reordering any event
breaks every link after it. Truncating the tail breaks no link, which is why exports carry the
head hash: compare a later chain against an exported head to catch it.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import ChainHead, Event
from models.event import GENESIS_HASH
from service.workflow.roles import Actor

__all__ = ["EventDraft", "append", "append_many", "append_bulk", "event_hash", "verify", "Break",
           "export", "head", "insert_rows", "HASHED_FIELDS"]

HASHED_FIELDS = ("seq", "case_id", "period_id", "stage", "from_status", "to_status", "action",
                 "actor_person_id", "actor_flow", "occurred_at", "comment", "payload", "prev_hash")
BATCH = 1000
# From this many rows on, PostgreSQL gets them by COPY (one statement, no per-row SQL); fewer
# go as INSERTs, which cost one round trip instead of COPY's three.
COPY_FROM = 200


@dataclass(frozen=True)
class EventDraft:
    """An event before it takes its place in the chain."""

    action: str
    actor: Actor
    occurred_at: datetime
    case_id: int | None = None
    period_id: int | None = None
    stage: str | None = None
    from_status: str | None = None
    to_status: str | None = None
    comment: str | None = None
    payload: dict[str, Any] | None = None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # The database gives instants back in UTC, so hash them in UTC whatever zone came in.
        return (value.astimezone(UTC) if value.tzinfo is not None else value).isoformat()
    raise TypeError(f"cannot hash {type(value).__name__}")


# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=…) does,
# without building an encoder per call.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=_json_default).encode


def canonical(fields: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, compact separators, UTF-8, instants in ISO 8601 UTC."""
    return _encode(fields).encode()


def event_hash(fields: dict[str, Any]) -> str:
    """The hash of an event given its hashed fields (``HASHED_FIELDS``)."""
    return hashlib.sha256(canonical({k: fields[k] for k in HASHED_FIELDS})).hexdigest()


# The head row in plain statements on the session's connection (no ORM object, no ORM
# execution path: they run on every transition).
_HEAD = sa.select(ChainHead.seq, ChainHead.hash).where(ChainHead.id == 1)
_LOCK_HEAD = _HEAD.with_for_update()
_MOVE_HEAD = (sa.update(ChainHead).where(ChainHead.id == 1)
              .values(seq=sa.bindparam("new_seq"), hash=sa.bindparam("new_hash")))
_INSERT_EVENTS = sa.insert(Event)


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the head row until commit; where the chain ends now (seq, hash)."""
    connection = session.connection()
    head_row = connection.execute(_LOCK_HEAD).first()
    if head_row is None:
        # The very first appends may race: create the row if nobody has, then lock it.
        insert = (postgresql.insert if connection.dialect.name == "postgresql"
                  else sqlite.insert)(ChainHead)
        connection.execute(insert.values(id=1, seq=0, hash=GENESIS_HASH)
                           .on_conflict_do_nothing())
        head_row = connection.execute(_LOCK_HEAD).one()
    return head_row.seq, head_row.hash


def append(session: Session, draft: EventDraft) -> Event:
    """Append one event at the head of the chain (locks the head row until commit)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        session.flush()  # the event may refer to what the session has pending
        row = connection.execute(_APPEND_ONE, _one_row(draft)).first()
        if row is not None:
            return Event(**_draft_fields(draft), seq=row.seq, prev_hash=row.prev_hash,
                         hash=row.hash)
    return append_many(session, [draft])[0]  # SQLite, or no head row yet


# Where seq and prev_hash sit in the sorted keys of the canonical form: between these.
_KEYS = sorted(HASHED_FIELDS)
_BEFORE_LINK = _KEYS[:_KEYS.index("prev_hash")]
_AFTER_LINK = _KEYS[_KEYS.index("seq") + 1:]
assert _KEYS.index("seq") == _KEYS.index("prev_hash") + 1 and _BEFORE_LINK and _AFTER_LINK

# One event appended in one statement, so the head lock is held for this statement and the
# commit alone (not for three round trips and the Python between them). The database hashes
# the canonical JSON that ``event_hash`` would: the app sends it in two halves, cut where
# "prev_hash" and "seq" go, and the statement puts the head's hash and next seq between them.
# No head row yet: no row comes back and nothing was written (``append_many`` creates it).
_APPEND_ONE = sa.text("""
WITH head AS (SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE),
new AS (
  INSERT INTO event (seq, case_id, period_id, stage, from_status, to_status, action,
                     actor_person_id, actor_flow, occurred_at, comment, payload, prev_hash, hash)
  SELECT head.seq + 1, CAST(:case_id AS INTEGER), CAST(:period_id AS INTEGER),
         CAST(:stage AS VARCHAR), CAST(:from_status AS VARCHAR), CAST(:to_status AS VARCHAR),
         CAST(:action AS VARCHAR), CAST(:actor_person_id AS INTEGER),
         CAST(:actor_flow AS VARCHAR), CAST(:occurred_at AS TIMESTAMPTZ),
         CAST(:comment AS TEXT), CAST(:payload AS JSONB), head.hash,
         encode(sha256(:before || convert_to('"prev_hash":"' || head.hash || '","seq":'
                                             || (head.seq + 1) || ',', 'UTF8') || :after),
                'hex')
  FROM head
  RETURNING seq, prev_hash, hash)
UPDATE chain_head SET seq = new.seq, hash = new.hash FROM new WHERE chain_head.id = 1
RETURNING new.seq, new.prev_hash, new.hash
""").bindparams(sa.bindparam("occurred_at", type_=Event.occurred_at.type),
                sa.bindparam("payload", type_=Event.payload.type),
                sa.bindparam("before", type_=sa.LargeBinary),
                sa.bindparam("after", type_=sa.LargeBinary))


def _draft_fields(d: EventDraft) -> dict[str, Any]:
    """A draft's hashed fields but seq and prev_hash (which the chain gives it)."""
    return {"case_id": d.case_id, "period_id": d.period_id, "stage": d.stage,
            "from_status": d.from_status, "to_status": d.to_status, "action": d.action,
            "actor_person_id": d.actor.person_id, "actor_flow": d.actor.flow,
            "occurred_at": d.occurred_at, "comment": d.comment, "payload": d.payload or {}}


def _one_row(d: EventDraft) -> dict[str, Any]:
    """``_APPEND_ONE``'s parameters: the draft's columns and its canonical form in halves."""
    fields = _draft_fields(d)
    before = canonical({k: fields[k] for k in _BEFORE_LINK})[:-1] + b","  # drop the "}"
    after = canonical({k: fields[k] for k in _AFTER_LINK})[1:]  # drop the "{"
    return {**fields, "before": before, "after": after}


def append_many(session: Session, drafts: Iterable[EventDraft]) -> list[Event]:
    """Append events in order under one head lock; returns them as (transient) Events."""
    rows: list[dict[str, Any]] = []
    listed = list(drafts)
    _append(session, listed, len(listed), keep=rows)
    return [Event(**r) for r in rows]


def append_bulk(session: Session, drafts: Iterable[EventDraft], *,
                count: int | None = None) -> int:
    """``append_many`` for bulk operations (a rollover's 400,000 events): the same events in
    the same chain, made and hashed while they stream to the database (COPY on PostgreSQL),
    without an Event object per row. ``drafts`` may be a generator of ``count`` drafts.
    Returns how many were appended."""
    if count is None:
        drafts = list(drafts)
        count = len(drafts)
    return _append(session, drafts, count)


def _append(session: Session, drafts: Iterable[EventDraft], count: int,
            keep: list[dict[str, Any]] | None = None) -> int:
    tip = list(_lock_head(session))  # where the chain ends, as the rows are made
    if not count:
        return 0

    def rows() -> Iterator[dict[str, Any]]:
        seq, prev = tip
        instants: dict[datetime, str] = {}  # a bulk append has one instant: convert it once
        for d in drafts:
            seq += 1
            fields = {"seq": seq, **_draft_fields(d), "prev_hash": prev}
            at = instants.get(d.occurred_at)
            if at is None:
                at = instants[d.occurred_at] = _json_default(d.occurred_at)
            # event_hash(fields), with the instant as the text canonical() makes of it.
            fields["hash"] = prev = hashlib.sha256(
                _encode({**fields, "occurred_at": at}).encode()).hexdigest()
            if keep is not None:
                keep.append(fields)
            yield fields
        if seq - tip[0] != count:
            raise ValueError(f"{seq - tip[0]} events drafted, {count} announced")
        tip[:] = seq, prev

    insert_rows(session, _INSERT_EVENTS, rows(), count=count)
    session.connection().execute(_MOVE_HEAD, {"new_seq": tip[0], "new_hash": tip[1]})
    return count


def insert_rows(session: Session, insert: sa.Insert, rows: Iterable[dict[str, Any]], *,
                count: int | None = None) -> None:
    """Run a plain ``sa.insert(Model)`` for many rows (dicts with the same keys, ``count`` of
    them if ``rows`` is an iterator) in the session's transaction: streamed by COPY into its
    table on PostgreSQL from ``COPY_FROM`` rows on, else as multi-row INSERTs of ``BATCH``.

    COPY bypasses SQLAlchemy's statement events and its type processing: values go as they
    are (instants must already be aware, as ``UTCDateTime`` demands; JSON columns take what
    ``json.dumps`` takes); the columns' Python-side defaults are filled in here, as
    ``insert()`` would. A database error still arrives as SQLAlchemy's (IntegrityError…).
    """
    if count is None:
        rows = rows if isinstance(rows, Sequence) else list(rows)
        count = len(rows)
    if not count:
        return
    session.flush()  # rows may refer to what the session has pending
    if session.get_bind().dialect.name != "postgresql" or count < COPY_FROM:
        connection, it = session.connection(), iter(rows)  # plain rows: no ORM bulk path
        while chunk := list(itertools.islice(it, BATCH)):
            connection.execute(insert, chunk)
        return
    _copy(session, insert.table, iter(rows))


def _copy(session: Session, table: Any, rows: Iterator[dict[str, Any]]) -> None:
    import psycopg
    from psycopg.copy import QueuedLibpqWriter

    first = next(rows)
    given = list(first)
    defaults = [(c.name, c.default) for c in table.columns
                if c.name not in first and c.default is not None]
    if any(not (d.is_scalar or d.is_callable) for _, d in defaults):
        raise ValueError(f"{table.name}: only scalar or callable defaults can be copied")
    columns = [*given, *(name for name, _ in defaults)]
    values = operator.itemgetter(*given)
    as_json = [n for n, c in enumerate(columns) if isinstance(table.c[c].type, sa.JSON)]
    last: dict[int, tuple[Any, str]] = {}  # per JSON column: the previous row's value, dumped
    statement = f'COPY "{table.name}" ({", ".join(columns)}) FROM STDIN'
    raw = session.connection().connection.driver_connection
    try:
        with raw.cursor() as cursor, cursor.copy(
                statement, writer=QueuedLibpqWriter(cursor)) as copy:
            for row in itertools.chain((first,), rows):
                line = list(values(row)) if len(given) > 1 else [row[given[0]]]
                line += [d.arg if d.is_scalar else d.arg(None) for _, d in defaults]
                for n in as_json:
                    value = line[n]
                    if value is None:
                        continue
                    seen = last.get(n)
                    if seen is None or seen[0] is not value:  # many rows share one context
                        seen = last[n] = (value, json.dumps(value))
                    line[n] = seen[1]
                copy.write_row(line)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def head(session: Session) -> tuple[int, str]:
    """The newest event's sequence number and hash ((0, genesis) when empty)."""
    row = session.execute(_HEAD).first()
    return (row.seq, row.hash) if row else (0, GENESIS_HASH)


@dataclass(frozen=True)
class Break:
    """The first place the chain is broken, and how."""

    seq: int
    problem: str


def _stream(session: Session, where: Any = None) -> Iterator[Event]:
    query = sa.select(Event).order_by(Event.seq).execution_options(yield_per=BATCH)
    if where is not None:
        query = query.where(where)
    yield from session.scalars(query)


def _fields(event: Event) -> dict[str, Any]:
    return {k: getattr(event, k) for k in (*HASHED_FIELDS, "hash")}


def verify(session: Session, *, expected_head: str | None = None) -> Break | None:
    """Walk the whole chain; return the first break, or None when it is intact.

    ``expected_head`` is a previously exported head hash: if it is not on the chain any more,
    the history was truncated or rewritten after that export.
    """
    # A head exported from the empty chain (genesis) is on every chain.
    prev, expected_seq = GENESIS_HASH, 1
    seen_head = expected_head is None or expected_head == GENESIS_HASH
    for event in _stream(session):
        if event.seq != expected_seq:
            return Break(expected_seq, f"event {expected_seq} is missing (next is {event.seq})")
        if event.prev_hash != prev:
            return Break(event.seq, "does not link to the event before it (deleted or reordered)")
        if event_hash(_fields(event)) != event.hash:
            return Break(event.seq, "content does not match its hash (modified)")
        prev, expected_seq = event.hash, expected_seq + 1
        seen_head = seen_head or event.hash == expected_head
    last_seq, head_hash = head(session)
    if last_seq != expected_seq - 1 or head_hash != prev:
        return Break(expected_seq - 1, f"chain ends at {expected_seq - 1} but the head says "
                     f"{last_seq} (tail truncated or head altered)")
    if not seen_head:
        return Break(expected_seq - 1, "the exported head hash is not on the chain (truncated "
                     "or rewritten since that export)")
    return None


def export(session: Session, out: IO[str], *, period_id: int, fmt: str) -> tuple[int, str]:
    """Write a period's events as JSON lines or CSV, ending with the chain's head hash.

    Returns (events written, head hash). The head is the whole chain's, so that an auditor can
    later check nothing was truncated after this export.
    """
    seq, head_hash = head(session)
    events = _stream(session, Event.period_id == period_id)
    count = 0
    if fmt == "jsonl":
        for event in events:
            count += 1
            out.write(canonical(_fields(event)).decode() + "\n")
        out.write(json.dumps({"head": {"seq": seq, "hash": head_hash, "events": count}}) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow([*HASHED_FIELDS, "hash"])
        for event in events:
            count += 1
            row = _fields(event)
            row["payload"] = json.dumps(row["payload"], sort_keys=True, ensure_ascii=False)
            row["occurred_at"] = row["occurred_at"].isoformat()
            writer.writerow([row[k] for k in (*HASHED_FIELDS, "hash")])
        writer.writerow(["#head", seq, head_hash, count])
    else:
        raise ValueError(f"unknown format {fmt!r} (jsonl or csv)")
    return count, head_hash
