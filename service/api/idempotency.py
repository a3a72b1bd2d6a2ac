"""Idempotency-Key for POST actions.

The first request with a key claims it (committed at once, state ``running``); the action
and its stored response then commit together. A replay with the same body gets the stored
response; the same key with a different body is refused (422); a replay while the first is
still running gets 409. A claim older than ``STALE_AFTER`` (its request died) may be retaken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import IdempotencyRecord
from service.errors import Conflict, InvalidInput, Reason

__all__ = ["claim", "store", "release", "request_hash", "Replay"]

STALE_AFTER = timedelta(minutes=5)
MAX_KEY = 200


class Replay(Exception):
    """The key was used before with this body: answer with the stored response."""

    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\0".join([method.encode(), path.encode(), body])).hexdigest()


def claim(uow: Callable[[], AbstractContextManager[Session]], *, principal: str, key: str,
          digest: str, now: datetime) -> None:
    """Claim the key for this request, or raise Replay / Conflict / InvalidInput."""
    if not key or len(key) > MAX_KEY:
        raise InvalidInput("bad Idempotency-Key", [Reason(
            "bad_idempotency_key", f"an Idempotency-Key is 1 to {MAX_KEY} characters")])
    try:
        with uow() as session:
            session.add(IdempotencyRecord(principal=principal, key=key, request_hash=digest,
                                          state="running", created_at=now))
        return
    except IntegrityError:
        pass
    with uow() as session:
        record = session.scalars(sa.select(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key
        ).with_for_update()).one()
        if record.request_hash != digest:
            raise InvalidInput("Idempotency-Key reused with a different request", [Reason(
                "idempotency_key_reused", "this key was used for a different request body")])
        if record.state == "done":
            raise Replay(_response(record))
        if now - record.created_at < STALE_AFTER:
            raise Conflict("the first request with this Idempotency-Key is still running")
        record.created_at = now  # its request died: this one takes over


def _response(record: IdempotencyRecord) -> JSONResponse:
    stored: dict[str, Any] = record.response or {}
    return JSONResponse(stored.get("body"), status_code=record.status_code or 200,
                        headers={**stored.get("headers", {}), "Idempotent-Replay": "true"},
                        media_type=stored.get("media_type", "application/json"))


def store(session: Session, *, principal: str, key: str, status: int, body: Any,
          headers: dict[str, str], media_type: str = "application/json") -> None:
    """Record the response, in the same transaction as the action it answers."""
    session.execute(sa.update(IdempotencyRecord).where(
        IdempotencyRecord.principal == principal, IdempotencyRecord.key == key).values(
        state="done", status_code=status,
        response={"body": body, "headers": headers, "media_type": media_type}))


def release(uow: Callable[[], AbstractContextManager[Session]], *, principal: str,
            key: str) -> None:
    """Forget a claim whose request failed for a reason worth retrying (e.g. 503)."""
    with uow() as session:
        session.execute(sa.delete(IdempotencyRecord).where(
            IdempotencyRecord.principal == principal, IdempotencyRecord.key == key,
            IdempotencyRecord.state == "running"))
