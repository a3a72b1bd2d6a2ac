"""Every workflow action over HTTP goes through ``perform``: If-Match, Idempotency-Key, the
choke point, the ETag, metrics — in one place, so each route only says which action it is."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from service.accounts import Principal
from service.api import idempotency
from service.api.deps import UoW
from service.clock import Clock
from service.errors import InvalidInput, PledgeflowError, Reason
from service.workflow import engine

__all__ = ["perform", "etag", "parse_if_match", "After"]

After = Callable[[Session, engine.Outcome], None]

_ETAG = re.compile(r'^\s*(?:W/)?"v?(\d+)"\s*$')


def etag(version: int) -> str:
    """The ETag of a case at a version."""
    return f'"v{version}"'


def parse_if_match(value: str | None) -> int | None:
    """The version an If-Match header expects (None for absent or ``*``)."""
    if value is None or value.strip() == "*":
        return None
    match = _ETAG.match(value)
    if not match:
        raise InvalidInput("bad If-Match", [Reason(
            "bad_if_match", 'If-Match must be an ETag from this API, e.g. "v3"')])
    return int(match.group(1))


async def perform(request: Request, uow: UoW, principal: Principal, clock: Clock, *,
                  case_id: int, action: str, comment: str | None = None,
                  data: BaseModel | dict[str, Any] | None = None,
                  public: bool = False, after: After | None = None) -> JSONResponse:
    """Run one action on one case for the caller and answer with the outcome and ETag.

    ``public`` actions (objections) need no sign-in and no read access to the case.
    ``after`` runs in the same transaction once the action succeeded (e.g. to finish a
    selection when its last case is decided); if it raises, nothing is written."""
    expected = parse_if_match(request.headers.get("if-match"))
    key = request.headers.get("idempotency-key")
    if key is not None and principal.person_id is None and principal.flow is None:
        raise InvalidInput("Idempotency-Key needs a signed-in caller", [Reason(
            "anonymous_idempotency_key", "anonymous callers share no identity to scope a key "
            "by; sign in, or send the request without Idempotency-Key")])
    body = await request.body() if key is not None else b""
    # The database work is synchronous: run it off the event loop.
    return await run_in_threadpool(
        _perform, request, uow, principal, clock, case_id=case_id, action=action,
        comment=comment, data=data, public=public, expected=expected, key=key, body=body,
        after=after)


def _perform(request: Request, uow: UoW, principal: Principal, clock: Clock, *, case_id: int,
             action: str, comment: str | None, data: Any, public: bool, expected: int | None,
             key: str | None, body: bytes, after: After | None) -> JSONResponse:
    if key is not None:
        digest = idempotency.request_hash(request.method, request.url.path, body)
        try:
            idempotency.claim(uow, principal=principal.key, key=key, digest=digest,
                              now=clock.now())
        except idempotency.Replay as replay:
            return replay.response
    try:
        return _run(request, uow, principal, clock, case_id=case_id, action=action,
                    comment=comment, data=data, public=public, expected=expected, key=key,
                    after=after)
    except PledgeflowError as exc:
        if key is not None:
            _store_error(uow, principal, key, exc, request.url.path)
        raise
    except Exception:
        if key is not None:
            idempotency.release(uow, principal=principal.key, key=key)
        raise


def _run(request: Request, uow: UoW, principal: Principal, clock: Clock, *, case_id: int,
         action: str, comment: str | None, data: Any, public: bool, expected: int | None,
         key: str | None, after: After | None) -> JSONResponse:
    with uow() as session:
        outcome = engine.apply(session, case_id=case_id, action=action,
                               actor=principal.actor, clock=clock, expected_version=expected,
                               hide_unless_visible=not public,
                               comment=comment, data=data)
        if after is not None:
            after(session, outcome)
        body = {"case_id": outcome.case_id, "action": outcome.action,
                "from": {"stage": outcome.from_state[0], "status": outcome.from_state[1]},
                "to": {"stage": outcome.to_state[0], "status": outcome.to_state[1]},
                "version": outcome.version, "event_seq": outcome.event_seq}
        headers = {"ETag": etag(outcome.version)}
        if key is not None:
            idempotency.store(session, principal=principal.key, key=key, status=200, body=body,
                              headers=headers)
    request.app.state.metrics.transitions.labels(action=action).inc()
    return JSONResponse(body, headers=headers)


def _store_error(uow: UoW, principal: Principal, key: str, exc: PledgeflowError,
                 path: str) -> None:
    """A refusal is an answer too: a replay gets the same problem response."""
    from service.api.problems import PROBLEM_JSON

    body = {"type": f"urn:pledgeflow:problem:{exc.type_slug}", "title": exc.title,
            "status": exc.status, "detail": exc.message, "instance": path,
            "reasons": [r.as_dict() for r in exc.reasons],
            # the extras the problem handler adds too (e.g. a 412's current_version)
            **{k: v for k, v in exc.extra.items() if k != "headers"}}
    with uow() as session:
        idempotency.store(session, principal=principal.key, key=key, status=exc.status,
                          body=body, headers={}, media_type=PROBLEM_JSON)
