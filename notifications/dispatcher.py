"""The outbox dispatcher: deliver committed notifications over SMTP, with retries.

One pass (``run_once``; ``run_forever`` claims the next batch while it sends this one):

1. **claim** due rows in a short transaction — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
   two dispatchers never take the same row; a claim is a lease (``next_attempt_at`` moves
   ahead), so a row whose dispatcher died is taken again later, with the same Message-ID;
   rows whose case has moved past what they ask for are **dropped**. The rest are rendered
   with fresh action-link tokens outside any transaction, and the links of those that
   rendered are written, with their history events, in a second short transaction of a few
   set-based statements (so neither the chain head nor SQLite's one write lock is held
   while 200 emails render);
2. **send** over a few reused SMTP connections, outside any transaction;
3. **record** each result: sent; transient failure → retry with exponential backoff and
   jitter, dead after ``max_attempts``; permanent (5xx) → dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Case, Notification
from notifications import links, mime
from notifications.render import RenderedEmail, render
from notifications.smtp import Connection, Permanent, SmtpTarget, Transient
from service.clock import Clock
from service.settings import Settings

__all__ = ["Dispatcher", "DispatchPolicy", "PassReport", "ACTIONABLE", "LINKS_FOR"]

log = logging.getLogger("pledgeflow.dispatcher")

# Emails that ask someone to act on a case as it was; pointless once the case has moved on.
ACTIONABLE = frozenset({"pledge_submitted", "task_assigned", "ballot_invitation",
                        "review_recorded", "stage_opened"})
# Which action links each template carries for its recipient.
LINKS_FOR: dict[str, tuple[str, ...]] = {
    "pledge_submitted": ("approve", "return"),
    "task_assigned": ("record_review",),
    "ballot_invitation": ("cast_ballot",),
    "review_recorded": ("acknowledge_review",),
}


@dataclass(frozen=True)
class DispatchPolicy:
    """Batch size, connections and retry schedule."""

    batch: int = 200
    connections: int = 4
    max_attempts: int = 8
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_cap: timedelta = timedelta(hours=2)
    lease: timedelta = timedelta(minutes=5)
    link_expiry: Mapping[str, timedelta] = field(default_factory=lambda: dict(links.EXPIRY))

    def backoff(self, attempts: int) -> timedelta:
        """Exponential, capped, with ±50% jitter so retries do not arrive in lockstep."""
        raw = min(self.backoff_cap, self.backoff_base * (2 ** max(attempts - 1, 0)))
        return raw * random.uniform(0.5, 1.5)


@dataclass
class PassReport:
    """What one pass did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    dropped: int = 0
    errors: dict[int, str] = field(default_factory=dict)


class Dispatcher:
    """Delivers the outbox; run ``run_forever`` beside the service, or ``run_once`` in a flow."""

    def __init__(self, factory: sessionmaker[Session], *, smtp: SmtpTarget, clock: Clock,
                 base_url: str, mail_from: str, policy: DispatchPolicy | None = None) -> None:
        self.factory, self.smtp, self.clock = factory, smtp, clock
        self.base_url, self.mail_from = base_url, mail_from
        self.policy = policy or DispatchPolicy()
        self._connections = [Connection(smtp) for _ in range(self.policy.connections)]

    @classmethod
    def from_settings(cls, settings: Settings, factory: sessionmaker[Session],
                      clock: Clock) -> Dispatcher:
        """The dispatcher the settings describe (SMTP server, connections, retries, links)."""
        return cls(factory, clock=clock, base_url=settings.base_url, mail_from=settings.mail_from,
                   smtp=SmtpTarget.from_url(settings.smtp_url, timeout=settings.smtp_timeout,
                                            verify_tls=settings.smtp_verify_tls),
                   policy=DispatchPolicy(
                       connections=settings.smtp_connections,
                       max_attempts=settings.outbox_max_attempts,
                       backoff_base=timedelta(seconds=settings.outbox_backoff_base),
                       backoff_cap=timedelta(seconds=settings.outbox_backoff_cap),
                       link_expiry=links.expiry_table(settings.link_expiry_days)))

    def run_until_stopped(self, arm_stop: Callable[[asyncio.AbstractEventLoop,
                                                    Callable[[], None]], None]) -> None:
        """``run_forever`` on its own uvloop event loop, as a dispatcher process runs it.
        ``arm_stop(loop, stop)`` arranges for ``stop()`` to be called (on the loop) when the
        process should finish: on a signal, when its parent closes stdin."""
        import uvloop

        async def deliver() -> None:
            stop = asyncio.Event()
            arm_stop(asyncio.get_running_loop(), stop.set)
            await self.run_forever(stop)

        uvloop.run(deliver())

    async def run_forever(self, stop: asyncio.Event, *, poll_seconds: float = 1.0) -> None:
        """Pass after pass until ``stop`` is set; a failing pass is logged, never fatal.

        After a full batch, the next one is claimed and rendered in a thread while this one
        is sent and recorded: its rows are leased by then, so the two batches never share a
        row, and one batch's database round trips and rendering hide behind the other's SMTP
        dialogue. A batch claimed when ``stop`` comes is still delivered before returning."""
        ahead: asyncio.Task[tuple[PassReport, list[tuple[int, mime.Outgoing]]]] | None = None
        while True:
            try:
                report, prepared = await (ahead or self._claim_batch())
            except Exception:  # the database may be down for a while: keep trying
                log.exception("dispatcher pass failed")
                report, prepared = PassReport(), []
            ahead = None
            if report.claimed >= self.policy.batch and not stop.is_set():
                ahead = asyncio.create_task(self._claim_batch(), name="outbox-claim-ahead")
            try:
                await self._deliver(prepared, report)
            except Exception:  # its rows stay leased and are taken again after the lease
                log.exception("dispatcher pass failed")
            if ahead is not None:
                continue
            if stop.is_set():
                break
            if report.claimed < self.policy.batch:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
        await self.close()

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()

    async def run_once(self) -> PassReport:
        """Claim, send and record one batch."""
        report, prepared = await self._claim_batch()
        await self._deliver(prepared, report)
        return report

    async def _claim_batch(self) -> tuple[PassReport, list[tuple[int, mime.Outgoing]]]:
        report = PassReport()
        return report, await asyncio.to_thread(self._claim, report)

    async def _deliver(self, prepared: list[tuple[int, mime.Outgoing]],
                       report: PassReport) -> None:
        if prepared:
            results = await self._send_all(prepared)
            await asyncio.to_thread(self._record, results, report)

    # --- 1. claim ------------------------------------------------------------------------------

    def _claim(self, report: PassReport) -> list[tuple[int, mime.Outgoing]]:
        """Take a batch, render it outside any transaction, then store its links: on SQLite
        the write lock is held only for the two short writes, not while 200 emails render."""
        now = self.clock.now()
        rows, cases = self._take(report, now)
        prepared, minted, failed = [], [], {}
        rendered: dict[tuple, tuple[list[str], RenderedEmail]] = {}
        for row in rows:
            mints: list[links.Mint] = []
            try:
                message = self._message(row, now, mints, rendered)
            except Exception as exc:  # one bad row must not hold up the whole outbox
                log.exception("notification %s cannot be rendered", row.id)
                failed[row.id] = f"cannot render: {exc}"[:1000]
                report.dead += 1
                report.errors[row.id] = str(exc)
                continue  # its links are never written
            minted += mints
            prepared.append((row.id, message))
        if minted or failed:
            with self.factory() as session, session.begin():
                links.issue_many(session, minted, now=now, expiry=self.policy.link_expiry,
                                 period_of={cid: case.period_id for cid, case in cases.items()})
                for row_id, error in failed.items():
                    session.execute(sa.update(Notification).where(Notification.id == row_id)
                                    .values(status="dead", last_error=error))
        return prepared

    def _take(self, report: PassReport, now: datetime
              ) -> tuple[list[Notification], dict[int, sa.Row[Any]]]:
        """The claim itself, one short transaction: due rows become "sending" under a lease
        (a row whose dispatcher dies before sending is taken again once it runs out); rows
        whose case has moved on are dropped. Returns the rows to send and their cases."""
        with self.factory() as session, session.begin():
            # "sending" rows past their lease belong to a dispatcher that died mid-pass.
            query = (sa.select(Notification).where(
                Notification.status.in_(("pending", "sending")),
                Notification.next_attempt_at <= now)
                     .order_by(Notification.id).limit(self.policy.batch))
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            report.claimed = len(rows)
            cases = self._cases(session, rows)
            taken = []
            for row in rows:
                if self._obsolete(row, cases):
                    row.status, row.last_error = "dropped", "the case moved on before sending"
                    report.dropped += 1
                    continue
                row.status, row.attempts = "sending", row.attempts + 1
                row.next_attempt_at = now + self.policy.lease
                taken.append(row)
        return taken, cases

    @staticmethod
    def _cases(session: Session, rows: list[Notification]) -> dict[int, sa.Row[Any]]:
        """Stage, status and period of every case the batch names (its own and its items')."""
        ids = {row.case_id for row in rows if row.case_id is not None}
        ids |= {item["case_id"] for row in rows for item in row.context.get("items", ())
                if item.get("case_id") is not None}
        if not ids:
            return {}
        return {c.id: c for c in session.execute(
            sa.select(Case.id, Case.stage, Case.status, Case.period_id)
            .where(Case.id.in_(sorted(ids))))}

    @staticmethod
    def _obsolete(row: Notification, cases: dict[int, sa.Row[Any]]) -> bool:
        if row.template not in ACTIONABLE or row.case_id is None:
            return False
        case = cases.get(row.case_id)
        return case is None or (case.stage, case.status) != (
            row.context.get("stage"), row.context.get("status"))

    def _links(self, row: Notification, case_id: int | None, version: int | None,
               actions: tuple[str, ...], mints: list[links.Mint]) -> list[dict]:
        """This recipient's action links for a case: a fresh token each, kept in ``mints``
        (tokens live only in the email; ``links.issue_many`` stores their hashes)."""
        if case_id is None or row.recipient_person_id is None:
            return []
        out = []
        for action in actions:
            mint = links.Mint(row.id, row.recipient_person_id, case_id, action, version)
            mints.append(mint)
            out.append({"label_zh": links.LINK_LABELS[action][0],
                        "label_en": links.LINK_LABELS[action][1],
                        "url": links.link_url(self.base_url, mint.token)})
        return out

    def _case_url(self, case_id: int | None) -> str:
        return f"{self.base_url.rstrip('/')}/cases/{case_id}" if case_id else self.base_url

    def _message(self, row: Notification, now: datetime, mints: list[links.Mint],
                 rendered_before: dict[tuple, tuple[list[str], RenderedEmail]]
                 ) -> mime.Outgoing:
        first_mint = len(mints)
        context: dict[str, Any] = dict(row.context)
        context["links"] = self._links(row, row.case_id, row.case_version,
                                       LINKS_FOR.get(row.template, ()), mints)
        context["case_url"] = self._case_url(row.case_id)
        if "items" in context:  # batched reminders: links per listed case
            context["items"] = [
                {**item, "case_url": self._case_url(item.get("case_id")),
                 "links": self._links(row, item.get("case_id"), item.get("version"),
                                      tuple(item.get("link_actions", ())), mints)}
                for item in context["items"]]
        lang = row.lang if row.lang in ("zh", "en") else "zh"
        key = (row.template, lang, row.case_id, row.case_version, row.recipient_person_id is None,
               json.dumps(row.context, sort_keys=True, ensure_ascii=False, default=str))
        rendered = self._render(row.template, lang, context,
                                [m.token for m in mints[first_mint:]], rendered_before, key)
        return mime.build(mail_from=self.mail_from, to=row.recipient_email,
                          subject=rendered.subject, message_id=row.message_id, date=now,
                          attempt=row.attempts, lang=lang, text=rendered.text,
                          html=rendered.html)

    @staticmethod
    def _render(template: str, lang: str, context: dict[str, Any], tokens: list[str],
                rendered_before: dict[tuple, tuple[list[str], RenderedEmail]],
                key: tuple) -> RenderedEmail:
        """``render()``, or for another recipient of an email already rendered in this batch
        (same template, language, case and stored context: a case's evaluators, its two
        superiors), that email with the link tokens swapped: the templates print a link's URL
        as it is, so the result is the same, without the largest cost of an email. An email
        is kept for reuse only if each of its tokens appears in it whole."""
        before = rendered_before.get(key)
        if before is not None and len(before[0]) == len(tokens):
            parts = [before[1].subject, before[1].text, before[1].html]
            for old, new in zip(before[0], tokens, strict=True):
                parts = [part.replace(old, new) for part in parts]
            return RenderedEmail(*parts)
        rendered = render(template, lang, context)
        if all(t in rendered.text or t in rendered.html for t in tokens):
            rendered_before[key] = (tokens, rendered)
        return rendered

    # --- 2. send -------------------------------------------------------------------------------

    async def _send_all(self, prepared: list[tuple[int, mime.Outgoing]]
                        ) -> dict[int, Exception | None]:
        queue: asyncio.Queue[tuple[int, mime.Outgoing]] = asyncio.Queue()
        for item in prepared:
            queue.put_nowait(item)
        results: dict[int, Exception | None] = {}

        async def worker(connection: Connection) -> None:
            while not queue.empty():
                notification_id, message = queue.get_nowait()
                try:
                    await connection.send(message)
                    results[notification_id] = None
                except (Transient, Permanent) as exc:
                    results[notification_id] = exc
                except Exception as exc:  # never strand a claimed row: retry it later
                    log.exception("unexpected error sending notification %s", notification_id)
                    results[notification_id] = Transient(f"{type(exc).__name__}: {exc}")

        workers = self._connections[:max(1, min(len(self._connections), len(prepared)))]
        await asyncio.gather(*(worker(c) for c in workers))
        return results

    # --- 3. record -----------------------------------------------------------------------------

    def _record(self, results: dict[int, Exception | None], report: PassReport) -> None:
        now = self.clock.now()
        sent = [n for n, error in results.items() if error is None]
        failed = [n for n, error in results.items() if error is not None]
        with self.factory() as session, session.begin():
            if sent:  # the common case, in one statement
                report.sent += session.execute(
                    sa.update(Notification).where(Notification.id.in_(sent))
                    .values(status="sent", sent_at=now, last_error=None)
                    .execution_options(synchronize_session=False)).rowcount
            rows = session.scalars(sa.select(Notification).where(
                Notification.id.in_(failed))) if failed else ()
            for row in rows:
                error = results[row.id]
                if isinstance(error, Permanent) or row.attempts >= self.policy.max_attempts:
                    row.status, row.last_error = "dead", str(error)[:1000]
                    report.dead += 1
                    report.errors[row.id] = str(error)
                else:
                    row.status, row.last_error = "pending", str(error)[:1000]
                    row.next_attempt_at = now + self.policy.backoff(row.attempts)
                    report.retried += 1
                    report.errors[row.id] = str(error)
