"""Response and request bodies of the JSON API (pydantic), shared by the routers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from service.workflow.inputs import MAX_ID

T = TypeVar("T")

#: An id in a path: 1..MAX_ID (beyond that nothing exists, and drivers overflow).
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
#: An optional id filter in a query string.
QueryId = Annotated[int | None, Query(ge=1, le=MAX_ID)]
#: A period's code in a path, e.g. ``2010`` (codes are at most 32 characters).
PeriodCode = Annotated[str, Path(min_length=1, max_length=32, description="e.g. 2010")]
#: Event sequence numbers are 64-bit.
MAX_SEQ = 2**63 - 1


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A page of results; pass ``next_after`` as ``after`` for the next page."""

    items: list[T]
    next_after: int | None = None


class CaseOut(Out):
    id: int
    period_id: int
    subject_kind: str
    subject_key: str
    organization_id: int
    person_id: int | None
    stage: str
    status: str
    version: int
    due_at: datetime | None
    updated_at: datetime
    actions: list[str] = Field(default_factory=list,
                               description="Actions the caller's role allows now.")


class EventOut(Out):
    seq: int
    case_id: int | None
    stage: str | None
    from_status: str | None
    to_status: str | None
    action: str
    actor_person_id: int | None
    actor_flow: str | None
    occurred_at: datetime
    comment: str | None
    payload: dict[str, Any]
    hash: str


class FulfilmentOut(Out):
    id: int
    status: str
    note: str
    evidence: str
    recorded_by_id: int | None
    recorded_at: datetime


class PledgeItemOut(Out):
    id: int
    position: int
    criterion_id: int | None
    target: str
    measures: str
    deadline_on: date | None
    owner_id: int | None
    assessment_standard: str
    fulfilment: str
    carried_over_from_id: int | None
    ledger: list[FulfilmentOut] = Field(default_factory=list)


class PledgeOut(Out):
    case_id: int
    summary: str
    submitted_by_id: int | None
    submitted_at: datetime | None
    approved_by_id: int | None
    approved_at: datetime | None
    published_at: datetime | None
    items: list[PledgeItemOut] = Field(default_factory=list)


class Comment(BaseModel):
    """An optional comment on an action (required where the table says so, e.g. return)."""

    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(default=None, max_length=4000)


class TransitionOut(BaseModel):
    case_id: int
    action: str
    version: int
    event_seq: int
    from_: dict[str, str] = Field(alias="from")
    to: dict[str, str]
