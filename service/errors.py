"""The application's error tree; one handler maps it to RFC 9457 problem responses.

    PledgeflowError
    ├── NotFound                  (404) — no such object, or not visible to the caller
    ├── Forbidden                 (403) — authenticated but not allowed
    ├── InvalidInput              (422) — the request's content is wrong
    ├── TransitionRefused         (409) — the workflow refuses; carries every reason
    └── Conflict                  (409) — someone else changed it first
        └── StaleVersion          (412) — If-Match / expected version no longer current

Services raise these, never HTTP exceptions; the CLI prints ``message`` and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PledgeflowError", "NotFound", "Forbidden", "InvalidInput", "TransitionRefused",
    "Conflict", "StaleVersion", "Reason",
]


@dataclass(frozen=True)
class Reason:
    """Why something was refused: a stable code and a human sentence (English; the pages and
    emails translate by code)."""

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class PledgeflowError(Exception):
    """Base of every error pledgeflow raises on purpose."""

    message: str
    reasons: list[Reason] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    status = 400
    type_slug = "error"
    title = "Request failed"

    def __str__(self) -> str:
        if not self.reasons:
            return self.message
        return self.message + ": " + "; ".join(r.message for r in self.reasons)


class NotFound(PledgeflowError):
    status, type_slug, title = 404, "not-found", "Not found"


class Forbidden(PledgeflowError):
    status, type_slug, title = 403, "forbidden", "Forbidden"


class InvalidInput(PledgeflowError):
    status, type_slug, title = 422, "invalid-input", "Invalid input"


class TransitionRefused(PledgeflowError):
    status, type_slug, title = 409, "transition-refused", "Transition refused"


class Conflict(PledgeflowError):
    status, type_slug, title = 409, "conflict", "Conflict"


class StaleVersion(Conflict):
    status, type_slug, title = 412, "stale-version", "Version is no longer current"
