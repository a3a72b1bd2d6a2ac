"""The demo's service and its outbox dispatcher, each in a process of its own, on a clock the
demo moves.

The demo used to run the app under uvicorn in a thread of its own process. Everything then
shared one interpreter lock — the people's HTTP clients, the flows, the mail catcher, uvicorn,
the request threads and the outbox dispatcher — so a replay used at most one of the machine's
two cores (a period took 67–69 s that way, 40–44 s with the service in a process of its own,
on the same machine the same day: docs/benchmarks.md, "The whole-campaign demo"). Rendering and
sending ~2,000 emails a period then took ~14% of the service's interpreter, so the dispatcher
has a process of its own too (as ``pledgeflow dispatch`` beside a service run with
``dispatcher=False``). Here ``python -m service.demo.service_process serve FD`` runs the app
``create_app`` builds under uvicorn (uvloop, httptools) on a socket the parent bound, and
``… dispatch`` runs ``Dispatcher.run_forever``; both read the time from the demo's
``SharedClock``, get their settings on stdin and stop when stdin closes, so they end with the
demo however the demo ends.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.clock import SharedClock
from service.settings import Settings

__all__ = ["serving_process", "dispatching_process"]


@contextmanager
def serving_process(settings: Settings, clock: SharedClock, *, timeout: float = 60.0,
                    meanwhile: Callable[[], None] | None = None) -> Iterator[str]:
    """Run the service for ``settings`` (its ``base_url`` set here) in a child process on a
    free loopback port; yields the base URL once it answers (having run ``meanwhile``, if
    given, while the child starts), and stops it on exit."""
    import httpx

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with _child(["serve", str(sock.fileno())], settings.model_copy(
                update={"base_url": base_url}), clock, pass_fds=[sock.fileno()]) as child:
            if meanwhile is not None:
                meanwhile()
            deadline = time.monotonic() + timeout
            while True:
                if child.poll() is not None:
                    raise RuntimeError(f"the demo's service exited with code {child.returncode}")
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the demo's service did not answer within {timeout:.0f} s")
                time.sleep(0.05)
            yield base_url


@contextmanager
def dispatching_process(settings: Settings, clock: SharedClock) -> Iterator[None]:
    """Run the outbox dispatcher for ``settings`` in a child process of its own (as
    ``pledgeflow dispatch`` does, on the demo's clock) until exit."""
    with _child(["dispatch"], settings, clock):
        yield


@contextmanager
def _child(args: list[str], settings: Settings, clock: SharedClock, *,
           pass_fds: list[int] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m service.demo.service_process ARGS``, given its settings on stdin; stopped
    on exit by closing stdin (and killed if it does not stop within 30 s)."""
    child = subprocess.Popen([sys.executable, "-m", "service.demo.service_process", *args],
                             stdin=subprocess.PIPE, pass_fds=pass_fds or [])
    assert child.stdin is not None
    try:
        child.stdin.write(json.dumps({"settings": settings.model_dump(mode="json"),
                                      "clock": str(clock.path)}).encode() + b"\n")
        child.stdin.flush()
        yield child
    finally:
        child.stdin.close()  # the child's signal to stop
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            raise RuntimeError(f"the demo's {args[0]} process did not stop within 30 s"
                               ) from None


def _throwaway_durability(engine: sa.Engine) -> None:
    """The demo's database is thrown away: commit without waiting for the disk.

    The service runs SQLite with ``synchronous=FULL`` (an fsync per commit, ~17 ms on the dev
    box), and every request commits at least once under SQLite's single write lock — which made
    a period take ~160 s. In WAL mode ``synchronous=NORMAL`` is still safe against a crash of
    the process (only a power cut may lose the last commits), and that is fine for a replay.
    Added after the service's own connect hook, so it wins; the service itself is unchanged."""
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _normal_sync(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _serve(settings: Settings, clock: SharedClock, fd: int) -> None:
    import uvicorn

    from service.api.app import create_app, freeze_startup_heap

    app = create_app(settings, clock=clock)
    _throwaway_durability(app.state.engine)
    freeze_startup_heap()
    server = uvicorn.Server(uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                                           log_level="warning", access_log=False))

    def stop_when_stdin_closes() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
    server.run(sockets=[socket.socket(fileno=fd)])


def _dispatch(settings: Settings, clock: SharedClock) -> None:
    import asyncio

    from notifications.dispatcher import Dispatcher
    from service.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    _throwaway_durability(engine)
    dispatcher = Dispatcher.from_settings(settings, make_session_factory(engine), clock)

    def stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: Callable[[], None]
                               ) -> None:
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop)),
                         daemon=True).start()

    try:
        dispatcher.run_until_stopped(stop_when_stdin_closes)
    finally:
        engine.dispose()


def _main(args: list[str]) -> None:
    given = json.loads(sys.stdin.readline())
    settings = Settings.model_validate(given["settings"])
    clock = SharedClock(Path(given["clock"]))
    if args[0] == "serve":
        _serve(settings, clock, int(args[1]))
    else:
        _dispatch(settings, clock)


if __name__ == "__main__":
    _main(sys.argv[1:])
