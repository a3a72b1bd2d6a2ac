"""Shared parts of the fault tests (``tests/test_fault_*.py``, marked ``fault``).

* ``prepare`` — a migrated, seeded database with N submitted pledges, each approvable by a
  committee secretary's bearer token. Fixture shortcut, as in ``bench/decisions.py``: the cases
  are *put* into pledge/submitted with set-based SQL; every approval the tests make goes
  through the real service and engine.
* ``Service`` — ``pledgeflow serve`` as a real subprocess in its own process group, on a free
  port; ``kill()`` is ``kill -9`` of the group, ``stop()`` a clean shutdown.
* ``Load`` — threads posting approvals over HTTP (httpx), bounded in requests and time,
  recording which cases were acknowledged with a 2xx.
* ``assert_acknowledged`` / ``audit_verify`` — what the database and ``pledgeflow audit
  verify`` say afterwards.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import create_pg_database, drop_pg_database, require_backend

EXE = Path(sys.executable).parent / "pledgeflow"
ROOT = Path(__file__).resolve().parent.parent

__all__ = ["pg_url", "prepare", "Service", "Load", "assert_acknowledged", "audit_verify", "EXE"]


def prepare(url: str, cases: int) -> tuple[list[int], dict[int, str]]:
    """Migrate and seed ``url`` and add ``cases`` submitted pledges: (case ids, token by case)
    — the decisions benchmark's fixture (``bench.decisions.load_submitted``)."""
    from bench.decisions import load_submitted
    from service import migrate
    from service.db import make_engine, make_session_factory

    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as s, s.begin():
            rows, token_of = load_submitted(s, cases, now=datetime.now(UTC), flow="fault")
    finally:
        engine.dispose()
    return [case_id for case_id, _ in rows], {case_id: token_of[parent]
                                               for case_id, parent in rows}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh ``pledgeflow_fault_…`` database at the suite's PostgreSQL, dropped afterwards
    (a test module uses it with ``pg_url = fault_support.pg_url``)."""
    require_backend("postgresql")
    name = f"pledgeflow_fault_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


def free_port() -> int:
    """A loopback TCP port nobody listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """``pledgeflow serve`` in a process group of its own; always ``stop()`` it (finalizer)."""

    def __init__(self, url: str, log_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PLEDGEFLOW_DATABASE_URL": url,
                    "PLEDGEFLOW_DISPATCHER": "false", "PLEDGEFLOW_DB_POOL_SIZE": "10",
                    **{f"PLEDGEFLOW_{k.upper()}": v for k, v in settings.items()}}
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start the service and wait until /healthz answers 200."""
        self.starts += 1
        log = (self.log_dir / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen([str(EXE), "serve", "--port", str(self.port)],
                                     env=self.env, cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the service did not get ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """The current run's output (for failure messages)."""
        path = self.log_dir / f"serve-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """``kill -9`` of the whole process group: no shutdown code runs."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; idempotent, safe after ``kill()``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass


@dataclass
class Load:
    """Approval traffic from ``threads`` threads, each case approved at most once.

    A case whose request failed without an answer (connection refused or reset while the
    service is down) or with a 503 goes back to the queue: the next try may find it already
    approved (a 409) when the lost answer was a commit. ``max_requests`` and the caller's
    deadlines bound the run."""

    base: str
    cases: list[int]
    token_of: dict[int, str]
    threads: int = 4
    max_requests: int = 20_000
    acked: set[int] = field(default_factory=set)
    retried: set[int] = field(default_factory=set)
    conflicts_on_retry: set[int] = field(default_factory=set)
    statuses: Counter[int | str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    problems_503: list[tuple[str, str, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._todo: queue.Queue[int] = queue.Queue()
        for case in self.cases:
            self._todo.put(case)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._workers = [threading.Thread(target=self._work, name=f"load-{i}", daemon=True)
                         for i in range(self.threads)]

    def start(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            if worker.ident is not None:  # started
                worker.join(30)
        assert not any(w.is_alive() for w in self._workers), "load threads did not stop"

    def wait_acked(self, count: int, timeout: float) -> bool:
        """Wait (bounded) until ``count`` approvals in all were acknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.acked) < count:
            if self._todo.empty() and not any(w.is_alive() for w in self._workers):
                break
            time.sleep(0.05)
        return len(self.acked) >= count

    def _work(self) -> None:
        with httpx.Client(timeout=15) as client:
            while not self._stop.is_set():
                try:
                    case = self._todo.get(timeout=0.2)
                except queue.Empty:
                    continue
                with self._lock:
                    if self._sent >= self.max_requests:
                        return
                    self._sent += 1
                self._one(client, case)

    def _one(self, client: httpx.Client, case: int) -> None:
        try:
            response = client.post(f"{self.base}/api/v1/cases/{case}/pledge/approve", json={},
                                   headers={"Authorization": f"Bearer {self.token_of[case]}"})
        except httpx.TransportError as exc:
            self._count(type(exc).__name__)
            self._retry(case)
            return
        status = response.status_code
        self._count(status)
        if 200 <= status < 300:
            with self._lock:
                self.acked.add(case)
        elif status == 503:
            with self._lock:
                self.problems_503.append((response.headers.get("content-type", ""),
                                          response.json().get("type", ""),
                                          response.headers.get("retry-after")))
            self._retry(case)
        elif status == 409 and case in self.retried:
            with self._lock:
                self.conflicts_on_retry.add(case)
        else:
            with self._lock:
                self.unexpected.append(f"case {case}: {status} {response.text[:300]}")

    def _count(self, key: int | str) -> None:
        with self._lock:
            self.statuses[key] += 1

    def _retry(self, case: int) -> None:
        with self._lock:
            self.retried.add(case)
        self._todo.put(case)
        time.sleep(0.1)  # the service or its database is down: do not spin


def assert_acknowledged(url: str, acked: set[int], maybe: set[int] | None = None) -> None:
    """Every acknowledged case is approved with its ``approve`` event, exactly once; so is
    every case in ``maybe`` (a retry answered 409: its lost first answer was a commit)."""
    from service.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            status = dict(conn.execute(sa.text('SELECT id, status FROM "case"')).all())
            events: Counter[Any] = Counter(conn.execute(sa.text(
                "SELECT case_id FROM event WHERE action = 'approve'")).scalars())
    finally:
        engine.dispose()
    wanted = acked | (maybe or set())
    lost = sorted(c for c in wanted if status.get(c) != "approved" or events[c] == 0)
    assert not lost, f"{len(lost)} acknowledged decisions are not in the database: {lost[:20]}"
    twice = sorted(c for c, n in events.items() if n > 1)
    assert not twice, f"cases approved twice: {twice[:20]}"
    approved = {c for c, s in status.items() if s == "approved"}
    assert approved == {c for c in events if c is not None}, "approved cases without an event"


def audit_verify(url: str) -> str:
    """Run ``pledgeflow audit verify`` on ``url``; assert it passes; return its output."""
    run = subprocess.run([str(EXE), "audit", "verify"], capture_output=True, text=True,
                         env={**os.environ, "PLEDGEFLOW_DATABASE_URL": url}, cwd=ROOT,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("OK: "), \
        f"audit verify failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    return run.stdout.strip()
