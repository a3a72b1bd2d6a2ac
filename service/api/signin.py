"""The sign-in lookup every request makes, remembered between requests where that is safe.

Each request resolves its caller (``accounts.principal_for_token`` or
``principal_for_session``) before its route runs: a hand-off to a worker thread and back, a
pool checkout with its pre-ping and a query, 0.44 ms of CPU on a decision of 3.65 ms
(docs/benchmarks.md, "Tenth session"). A principal changes only when a token or session is
revoked or deleted, or an account is deactivated, so on PostgreSQL each worker remembers the
principals it resolved and forgets *all* of them whenever one of those happens anywhere:

- migration 0007's triggers ``NOTIFY pledgeflow_sign_in`` on every such statement, and each
  worker ``LISTEN``s on a connection of its own; a notification waiting on that connection
  is taken before any remembered principal is used, so a revocation committed elsewhere
  holds from the first request that arrives after it has reached this worker;
- a commit in this process that changed one of those tables forgets at once, without
  waiting for the notification to come back (``_forget_after_local_writes``);
- while the listening connection is down (a database restart), nothing is remembered and
  every request looks its caller up; the connection is re-made after ``RETRY_FIRST``
  seconds, the wait doubling while it fails.

Web sessions are remembered with their expiry and never used past it. Unknown tokens are
never remembered. SQLite (the embedded default, one process) and an app whose lifespan has
not run (a test client used without ``with``) look every caller up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from starlette.concurrency import run_in_threadpool

from models import Account, ApiToken, WebSession
from service.accounts import Principal, hash_secret, principal_for_session, principal_for_token
from service.db import lone_reads

if TYPE_CHECKING:  # imported where used: on SQLite, psycopg is never loaded (8 MB of RSS)
    import psycopg

__all__ = ["SignInLookup", "CHANNEL", "APPLICATION_NAME"]

log = logging.getLogger(__name__)

#: What migration 0007's triggers notify on, and the listening connection's name.
CHANNEL = "pledgeflow_sign_in"
APPLICATION_NAME = "pledgeflow sign-in"
#: At most this many principals are remembered per worker; past it, all are forgotten.
MAX_REMEMBERED = 10_000
#: Waits between attempts to re-make the listening connection: first and longest.
RETRY_FIRST, RETRY_LONGEST = 0.5, 30.0

_SIGN_IN_TABLES = frozenset(m.__tablename__ for m in (ApiToken, WebSession, Account))
_LOOKUPS: weakref.WeakSet[SignInLookup] = weakref.WeakSet()


class SignInLookup:
    """Resolves bearer tokens and session cookies to principals for one app."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = lone_reads(engine)
        self._listens = engine.dialect.name == "postgresql"
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self._remembered: dict[str, Principal] = {}
        self._generation = 0  # moves on each forget(): a lookup begun before it is not kept
        self._listening: psycopg.AsyncConnection[Any] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        _LOOKUPS.add(self)

    @property
    def remembers(self) -> bool:
        """Whether principals are being remembered (the listening connection is up)."""
        return self._listening is not None

    async def open(self) -> None:
        """Start listening (the app's lifespan); until then, every caller is looked up."""
        if self._listens and self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._keep_listening(), name="sign-in-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = self._loop = None

    def forget(self) -> None:
        """Drop every remembered principal (on the event loop, which alone touches them)."""
        self._remembered.clear()
        self._generation += 1

    def forget_from_any_thread(self) -> None:
        """``forget`` from a worker thread: queued on the loop ahead of the response that
        the thread's request is about to send, so that request's next one sees it."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed: nothing is remembered any more
                loop.call_soon_threadsafe(self.forget)

    async def for_token(self, token: str) -> Principal | None:
        """The person or flow behind a bearer token (see ``accounts.principal_for_token``)."""
        key = "token:" + hash_secret(token)
        if (hit := self._recall(key, None)) is not None:
            return hit
        generation = self._generation
        principal = await self._read(principal_for_token, token)
        self._remember(key, principal, generation)
        return principal

    async def for_session(self, cookie: str, now: datetime) -> Principal | None:
        """The person behind a session cookie (see ``accounts.principal_for_session``)."""
        key = "session:" + hash_secret(cookie)
        if (hit := self._recall(key, now)) is not None:
            return hit
        generation = self._generation
        principal = await self._read(principal_for_session, cookie, now)
        self._remember(key, principal, generation)
        return principal

    # --- remembering ------------------------------------------------------------------------

    def _recall(self, key: str, now: datetime | None) -> Principal | None:
        if self._listening is None:
            return None
        self._take_notifications()  # a revocation already delivered applies before any hit
        principal = self._remembered.get(key)
        if principal is None:
            return None
        if principal.expires_at is not None and (now is None or now >= principal.expires_at):
            del self._remembered[key]
            return None
        return principal

    def _remember(self, key: str, principal: Principal | None, generation: int) -> None:
        if principal is None or self._listening is None or generation != self._generation:
            return
        if len(self._remembered) >= MAX_REMEMBERED:
            self.forget()
        self._remembered[key] = principal

    async def _read(self, lookup: Callable[..., Principal | None], *args: Any
                    ) -> Principal | None:
        def run() -> Principal | None:
            with self._engine.connect() as connection:
                return lookup(connection, *args)

        return await run_in_threadpool(run)

    # --- listening --------------------------------------------------------------------------

    async def _keep_listening(self) -> None:
        """Hold a ``LISTEN`` connection, re-making it with backoff whenever it is lost."""
        import psycopg

        wait = RETRY_FIRST
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME)
                await connection.execute(f"LISTEN {CHANNEL}")
            except (psycopg.Error, OSError) as exc:
                log.info("sign-in listener cannot connect (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_LONGEST)
                continue
            wait = RETRY_FIRST
            await self._listen_on(connection)
            await asyncio.sleep(wait)  # lost: a restarting database needs a moment

    async def _listen_on(self, connection: psycopg.AsyncConnection[Any]) -> None:
        import psycopg

        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        self.forget()  # whatever was remembered while not listening is not to be trusted
        self._listening = connection
        socket = connection.pgconn.socket
        loop.add_reader(socket, self._take_notifications)
        try:
            await self._lost
        finally:
            loop.remove_reader(socket)
            self._listening = None
            self.forget()
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    def _take_notifications(self) -> None:
        """Read what has arrived on the listening connection without waiting; forget on any
        notification, and stop remembering when the connection is gone."""
        connection = self._listening
        if connection is None:
            return
        import psycopg  # loaded already: a dictionary lookup

        pgconn = connection.pgconn
        try:
            pgconn.consume_input()
            if pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection is closed")
        except psycopg.OperationalError as exc:
            log.warning("sign-in listener lost its connection: %s", exc)
            self._listening = None
            self.forget()
            if self._lost is not None and not self._lost.done():
                self._lost.set_result(None)
            return
        notified = False
        while pgconn.notifies() is not None:
            notified = True
        if notified:
            self.forget()


# --- this process's own writes ---------------------------------------------------------------

_CHANGED = "pledgeflow.sign_in_changed"


@event.listens_for(Session, "after_flush")
def _note_sign_in_writes(session: Session, flush: UOWTransaction) -> None:
    if any(getattr(obj, "__tablename__", None) in _SIGN_IN_TABLES
           for obj in (*session.dirty, *session.deleted)):
        session.info[_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _note_sign_in_statements(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and getattr(
            getattr(state.statement, "table", None), "name", None) in _SIGN_IN_TABLES:
        state.session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _forget_after_local_writes(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        for lookup in list(_LOOKUPS):
            lookup.forget_from_any_thread()


@event.listens_for(Session, "after_soft_rollback")
def _nothing_changed(session: Session, _previous: Any) -> None:
    session.info.pop(_CHANGED, None)
