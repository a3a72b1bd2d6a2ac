"""The flows' HTTP client: the service's API with the flows' service token, nothing else.

Flows act only through the API (DESIGN §3), so every act is checked by the service's choke
point and lands in the history with the flow as its actor. This module knows no Prefect: it is
a small synchronous ``httpx.Client`` wrapper, usable from a flow, a task, a test or a shell.

Errors::

    ServiceError            the service answered with an error (problem+json is parsed:
    │                       status, type, title, detail and every reason)
    └── ServiceUnavailable  503/502/504 or no connection, still so after the retries
    NotConfigured           no service token to call it with

Retries: 502/503/504 and connection errors are retried with exponential backoff (honouring
``Retry-After``), on every method — every call the flows make is safe to repeat (bulk actions
refuse what is already done; selection, notice, hand-off and rollover are idempotent).

Test seam: pass ``transport=`` (e.g. ``httpx.MockTransport`` or a wrapper around
``httpx.HTTPTransport``) or, for flows that build their own client, wrap the run in
``override(base_url=..., token=..., transport=...)``. The flows are synchronous, so the
in-process choice is a real server: tests run the real app under uvicorn on a loopback port
(``httpx.ASGITransport`` would need an async client, and Starlette's TestClient would hide the
HTTP layer whose failures the retries exist for).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx

__all__ = ["FlowClient", "ServiceError", "ServiceUnavailable", "NotConfigured", "RetryPolicy",
           "override", "parse_instant"]

RETRY_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "pledgeflow-flows/0.1"
# A rollover is one transaction over every case of a period (210,000 in docs/benchmarks.md):
# wait for its answer far longer than for other calls. A read timed out here would be retried,
# and the retry would only find the work done (zeros) and misreport it.
ROLLOVER_TIMEOUT = httpx.Timeout(60.0, read=900.0)


class ServiceError(Exception):
    """The service refused or failed a request; ``reasons`` as the problem+json listed them."""

    def __init__(self, method: str, path: str, status: int | None,
                 problem: dict[str, Any] | None = None, cause: str | None = None) -> None:
        self.method, self.path, self.status = method, path, status
        self.problem = problem or {}
        self.type: str = self.problem.get("type", "")
        self.title: str = self.problem.get("title", "")
        self.detail: str = self.problem.get("detail", "") or (cause or "")
        self.reasons: list[dict[str, str]] = list(self.problem.get("reasons") or [])
        super().__init__(str(self))

    @property
    def slug(self) -> str:
        """``transition-refused`` for ``urn:pledgeflow:problem:transition-refused``."""
        return self.type.rsplit(":", 1)[-1]

    def has_reason(self, code: str) -> bool:
        return any(r.get("code") == code for r in self.reasons)

    def __str__(self) -> str:
        head = f"{self.method} {self.path} → {self.status or 'no response'}"
        if self.title:
            head += f" {self.title}"
        text = f"{head}: {self.detail}" if self.detail else head
        if self.reasons:
            text += "; " + "; ".join(f"{r.get('message')} [{r.get('code')}]"
                                     for r in self.reasons)
        return text


class ServiceUnavailable(ServiceError):
    """Still unavailable (503/502/504 or no connection) after every retry."""


class NotConfigured(Exception):
    """The flows cannot reach the service: no token (or URL) configured."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``attempts`` in all, backoff doubling from
    ``backoff`` seconds up to ``cap`` (a ``Retry-After`` header wins, within the cap)."""

    attempts: int = 5
    backoff: float = 0.5
    cap: float = 15.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.cap)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        return min(self.backoff * (2 ** (attempt - 1)), self.cap)


@dataclass
class _Override:
    base_url: str | None = None
    token: str | None = None
    transport: httpx.BaseTransport | None = None


_override_lock = threading.Lock()
_override: _Override | None = None


@contextmanager
def override(*, base_url: str | None = None, token: str | None = None,
             transport: httpx.BaseTransport | None = None) -> Iterator[None]:
    """Make ``FlowClient.from_settings`` use this URL, token or transport (tests, one-off
    runs against another service) for the duration of the block, in every thread."""
    global _override
    with _override_lock:
        previous, _override = _override, _Override(base_url, token, transport)
    try:
        yield
    finally:
        with _override_lock:
            _override = previous


def parse_instant(value: str | None) -> datetime | None:
    """An ISO instant from the API (always with a zone) as an aware datetime."""
    return datetime.fromisoformat(value) if value else None


class FlowClient:
    """The API calls the flows make. Use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, token: str | None, *,
                 transport: httpx.BaseTransport | None = None, timeout: float = 60.0,
                 retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=timeout, transport=transport)
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    @classmethod
    def from_settings(cls, **kwargs: Any) -> FlowClient:
        """A client for ``PLEDGEFLOW_BASE_URL`` with ``PLEDGEFLOW_SERVICE_TOKEN`` (or what
        ``override`` says)."""
        from service.settings import get_settings

        settings = get_settings()
        current = _override or _Override()
        token = current.token or settings.service_token
        if not token:
            raise NotConfigured("no service token: set PLEDGEFLOW_SERVICE_TOKEN "
                                "(pledgeflow tokens create --name flows --flow flows)")
        return cls(current.base_url or settings.base_url, token,
                   transport=current.transport, **kwargs)

    def __enter__(self) -> FlowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the transport ------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, timeout: httpx.Timeout | None = None) -> Any:
        """Send, retrying what may pass; the decoded JSON body, or ServiceError. ``timeout``
        replaces the client's own for this call."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        for attempt in range(1, self.retry.attempts + 1):
            last = attempt == self.retry.attempts
            try:
                response = self._http.request(
                    method, path, params=params, json=json,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                if last:
                    raise ServiceUnavailable(method, path, None,
                                             cause=f"{type(exc).__name__}: {exc}") from exc
                self._sleep(self.retry.delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._sleep(self.retry.delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.is_success:
                return response.json() if response.content else None
            raise _error(method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None, **params: Any) -> Any:
        return self.request("POST", path, params=params, json=json)

    # --- what the flows ask -------------------------------------------------------------------

    def periods(self) -> list[dict[str, Any]]:
        """Every period with its calendar, status and effective rules."""
        return self.get("/api/v1/periods")

    def period(self, code: str) -> dict[str, Any]:
        return self.get(f"/api/v1/periods/{code}")

    def case_states(self, code: str, *, page_size: int = 1000
                    ) -> tuple[datetime, list[dict[str, Any]]]:
        """Every case of a period, page by page; with the service's ``now`` of the first page."""
        items: list[dict[str, Any]] = []
        after, now = 0, None
        while True:
            page = self.get(f"/api/v1/periods/{code}/case-states", after=after, limit=page_size)
            now = now or parse_instant(page["now"])
            items += page["items"]
            if page.get("next_after") is None:
                assert now is not None
                return now, items
            after = page["next_after"]

    def case_state(self, case_id: int) -> dict[str, Any]:
        return self.get(f"/api/v1/cases/{case_id}/state")

    def awards(self, code: str) -> dict[str, Any]:
        return self.get(f"/api/v1/periods/{code}/awards")

    def bulk(self, action: str, case_ids: list[int]) -> dict[str, Any]:
        """One machine action on up to 1000 cases, in one request and one transaction."""
        return self.post("/api/v1/bulk/actions", {"action": action, "case_ids": case_ids})

    def select(self, code: str) -> list[dict[str, Any]]:
        return self.post(f"/api/v1/periods/{code}/commendations/select")

    def post_notice(self, commendation_id: int) -> dict[str, Any]:
        return self.post(f"/api/v1/commendations/{commendation_id}/notice")

    def hand_off(self, code: str) -> list[dict[str, Any]]:
        return self.post(f"/api/v1/periods/{code}/commendations/hand-off")

    def roll_over(self, code: str) -> dict[str, Any]:
        """Roll one period over; waits up to ``ROLLOVER_TIMEOUT`` for the answer."""
        return self.request("POST", f"/api/v1/periods/{code}/rollover",
                            timeout=ROLLOVER_TIMEOUT)

    def run_reminders(self, *, as_of: date | None = None,
                      period: str | None = None) -> dict[str, Any]:
        return self.post("/api/v1/reminders/run", as_of=as_of.isoformat() if as_of else None,
                         period=period)

    def sweep(self, *, dead: bool = False) -> dict[str, Any]:
        return self.post("/api/v1/notifications/sweep", dead=str(dead).lower())


def _error(method: str, path: str, response: httpx.Response) -> ServiceError:
    problem: dict[str, Any] | None = None
    if response.headers.get("content-type", "").split(";")[0].strip() in (
            "application/problem+json", "application/json"):
        try:
            body = response.json()
            problem = body if isinstance(body, dict) else None
        except ValueError:
            problem = None
    cause = None if problem else response.text[:300].strip() or response.reason_phrase
    cls = ServiceUnavailable if response.status_code in RETRY_STATUSES else ServiceError
    return cls(method, path, response.status_code, problem, cause=cause)
