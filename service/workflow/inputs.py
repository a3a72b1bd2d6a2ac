"""What each action takes besides a comment: validated at the edge, shared by API and CLI."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = [
    "ItemInput", "EditPledge", "FulfilmentIn", "RecordFulfilment", "RecordReview",
    "AcknowledgeReview", "CastBallot", "FileObjection", "ResolveObjection", "AdjustNomination",
    "Decide", "AssignEvaluators", "MAX_ID", "DbId", "Day",
]

Text = Field(min_length=1, max_length=4000)
#: Ids are INTEGER columns (32-bit on PostgreSQL): nothing else can name a row, and a larger
#: number must be refused at the edge, not by the database driver.
MAX_ID = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_ID)]
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _calendar_day(value: Any) -> Any:
    """Let through a date or ``YYYY-MM-DD``; refuse what lax parsing would read as a Unix
    timestamp (``0`` or ``"0.0"`` would silently become 1970-01-01)."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DAY.fullmatch(value.strip()):
        return value.strip()
    raise ValueError("a calendar day is written YYYY-MM-DD")


#: A calendar day (JSON and query strings: ``YYYY-MM-DD`` only).
Day = Annotated[date, BeforeValidator(_calendar_day)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class ItemInput(_Input):
    """One pledge item as typed in the pledge editor."""

    criterion: str | None = Field(default=None, max_length=64, description="Criterion code.")
    target: str = Field(min_length=1, max_length=2000)
    measures: str = Field(default="", max_length=4000)
    deadline_on: Day | None = None
    owner_id: DbId | None = None
    assessment_standard: str = Field(default="", max_length=2000)


class EditPledge(_Input):
    """Replace a draft pledge's summary and items."""

    summary: str = Field(default="", max_length=4000)
    items: list[ItemInput] = Field(default_factory=list, max_length=50)


class FulfilmentIn(_Input):
    """Progress on a pledge item: status, a note, and the evidence for it."""

    status: str = Field(pattern="^(in_progress|kept|not_kept)$")
    note: str = Field(default="", max_length=4000)
    evidence: str = Field(default="", max_length=4000)


class RecordFulfilment(FulfilmentIn):
    """A ledger line on one pledge item."""

    item_id: DbId


class RecordReview(_Input):
    """A leader's review: achievements, problems, direction, and a rating per criterion."""

    achievements: str = Text
    problems: str = Text
    direction: str = Text
    ratings: dict[str, str] = Field(default_factory=dict, max_length=20)


class AcknowledgeReview(_Input):
    """The subject's answer to a review."""

    rectification_plan: str = Text


class CastBallot(_Input):
    """One evaluator's answers: criterion code -> scale option code."""

    answers: dict[str, str] = Field(min_length=1, max_length=20)


class FileObjection(_Input):
    """An objection to something under public notice; the filer may stay anonymous."""

    body: str = Text
    filed_by_name: str = Field(default="", max_length=100)
    contact: str = Field(default="", max_length=254)


class ResolveObjection(_Input):
    """Which objection a decision (uphold or dismiss) is about."""

    objection_id: DbId


class Decide(_Input):
    """The campaign office's decision on one shortlisted candidate."""

    commend: bool


class AssignEvaluators(_Input):
    """The campaign office adds or removes evaluators of an open round."""

    add: list[DbId] = Field(default_factory=list, max_length=500)
    remove: list[DbId] = Field(default_factory=list, max_length=500)


class AdjustNomination(_Input):
    """Move a candidate onto or off the shortlist; the rationale is mandatory."""

    shortlisted: bool
    rationale: str = Text

    @field_validator("rationale")
    @classmethod
    def _meaningful(cls, value: str) -> str:
        if len(value) < 4:
            raise ValueError("a rationale must say why (at least 4 characters)")
        return value
