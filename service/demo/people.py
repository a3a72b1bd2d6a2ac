"""The demo's people: every account's bearer token, requests through the JSON API as one
person or anonymously, and a small thread pool so people act at the same time."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

PEOPLE_THREADS = 4

# --- people -------------------------------------------------------------------------------------

class People:
    """Bearer tokens for every account, and requests as one person or anonymously."""

    def __init__(self, base_url: str, tokens: dict[int, str]) -> None:
        self.tokens = tokens
        self.http = httpx.Client(base_url=base_url, timeout=60.0,
                                 limits=httpx.Limits(max_connections=PEOPLE_THREADS * 2))
        self.pool = ThreadPoolExecutor(PEOPLE_THREADS, thread_name_prefix="pledgeflow-demo-people")
        self.requests = 0
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()

    def can(self, person_id: int | None) -> bool:
        return person_id is not None and person_id in self.tokens

    def call(self, method: str, path: str, person_id: int | None = None, *,
             json: Any = None, params: dict[str, Any] | None = None,
             expect_ok: bool = True) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if person_id is not None:
            headers["Authorization"] = f"Bearer {self.tokens[person_id]}"
        response = self.http.request(method, path, json=json, params=params, headers=headers)
        with self._lock:
            self.requests += 1
        if response.status_code >= 500:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text[:500]}")
        if not response.is_success:
            if expect_ok and response.status_code != 409:
                raise RuntimeError(f"{method} {path} → {response.status_code}: "
                                   f"{response.text[:500]}")
            with self._lock:
                self.refused[f"{path.split('/')[-1]} {response.status_code}"] += 1
        return response

    def each(self, work: Iterable[Any], fn: Callable[[Any], None]) -> None:
        """Run ``fn`` over the work concurrently (people act at the same time); re-raise."""
        for future in [self.pool.submit(fn, w) for w in work]:
            future.result()
