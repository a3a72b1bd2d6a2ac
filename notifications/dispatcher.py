"""The outbox dispatcher: deliver committed notifications over SMTP, with retries.

One pass (``run_once``):

1. **claim** due rows in a short transaction — ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
   two dispatchers never take the same row; a claim is a lease (``next_attempt_at`` moves
   ahead), so a row whose dispatcher died is taken again later, with the same Message-ID;
   rows whose case has moved past what they ask for are **dropped**; the rest get their
   action links minted and are rendered;
2. **send** over a few reused SMTP connections, outside any transaction;
3. **record** each result: sent; transient failure → retry with exponential backoff and
   jitter, dead after ``max_attempts``; permanent (5xx) → dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Case, Notification
from notifications import links
from notifications.render import render
from notifications.smtp import Connection, Permanent, SmtpTarget, Transient
from service.clock import Clock

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

    async def run_forever(self, stop: asyncio.Event, *, poll_seconds: float = 1.0) -> None:
        """Pass after pass until ``stop`` is set; a failing pass is logged, never fatal."""
        while not stop.is_set():
            try:
                report = await self.run_once()
            except Exception:  # the database may be down for a while: keep trying
                log.exception("dispatcher pass failed")
                report = PassReport()
            if report.claimed < self.policy.batch:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
        await self.close()

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()

    async def run_once(self) -> PassReport:
        """Claim, send and record one batch."""
        report = PassReport()
        prepared = await asyncio.to_thread(self._claim, report)
        if not prepared:
            return report
        results = await self._send_all(prepared)
        await asyncio.to_thread(self._record, results, report)
        return report

    # --- 1. claim ------------------------------------------------------------------------------

    def _claim(self, report: PassReport) -> list[tuple[int, EmailMessage]]:
        now = self.clock.now()
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
            prepared = []
            for row in rows:
                if self._obsolete(session, row):
                    row.status, row.last_error = "dropped", "the case moved on before sending"
                    report.dropped += 1
                    continue
                row.status, row.attempts = "sending", row.attempts + 1
                row.next_attempt_at = now + self.policy.lease
                try:
                    with session.begin_nested():  # its links go if it cannot be rendered
                        message = self._message(session, row, now)
                except sa.exc.SQLAlchemyError:
                    raise
                except Exception as exc:  # one bad row must not hold up the whole outbox
                    log.exception("notification %s cannot be rendered", row.id)
                    row.status, row.last_error = "dead", f"cannot render: {exc}"[:1000]
                    report.dead += 1
                    report.errors[row.id] = str(exc)
                    continue
                prepared.append((row.id, message))
            return prepared

    @staticmethod
    def _obsolete(session: Session, row: Notification) -> bool:
        if row.template not in ACTIONABLE or row.case_id is None:
            return False
        case = session.get(Case, row.case_id)
        return case is None or (case.stage, case.status) != (
            row.context.get("stage"), row.context.get("status"))

    def _links(self, session: Session, row: Notification, case_id: int | None,
               version: int | None, actions: tuple[str, ...], now: datetime) -> list[dict]:
        """Mint this recipient's action links for a case (tokens live only in the email)."""
        if case_id is None or row.recipient_person_id is None:
            return []
        return [{"label_zh": links.LINK_LABELS[a][0], "label_en": links.LINK_LABELS[a][1],
                 "url": links.link_url(self.base_url, links.issue(
                     session, recipient_id=row.recipient_person_id, case_id=case_id,
                     action=a, case_version=version, now=now, notification_id=row.id))}
                for a in actions]

    def _case_url(self, case_id: int | None) -> str:
        return f"{self.base_url.rstrip('/')}/cases/{case_id}" if case_id else self.base_url

    def _message(self, session: Session, row: Notification, now: datetime) -> EmailMessage:
        context: dict[str, Any] = dict(row.context)
        context["links"] = self._links(session, row, row.case_id, row.case_version,
                                       LINKS_FOR.get(row.template, ()), now)
        context["case_url"] = self._case_url(row.case_id)
        if "items" in context:  # batched reminders: links per listed case
            context["items"] = [
                {**item, "case_url": self._case_url(item.get("case_id")),
                 "links": self._links(session, row, item.get("case_id"), item.get("version"),
                                      tuple(item.get("link_actions", ())), now)}
                for item in context["items"]]
        rendered = render(row.template, row.lang if row.lang in ("zh", "en") else "zh", context)
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = row.recipient_email
        message["Subject"] = rendered.subject
        message["Message-ID"] = row.message_id
        message["Date"] = format_datetime(now)
        message["Auto-Submitted"] = "auto-generated"
        message["X-Pledgeflow-Attempt"] = str(row.attempts)
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        # after the content: set_content() clears every Content-* header already set
        message["Content-Language"] = "zh-CN" if row.lang == "zh" else "en"
        return message

    # --- 2. send -------------------------------------------------------------------------------

    async def _send_all(self, prepared: list[tuple[int, EmailMessage]]
                        ) -> dict[int, Exception | None]:
        queue: asyncio.Queue[tuple[int, EmailMessage]] = asyncio.Queue()
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
        with self.factory() as session, session.begin():
            rows = session.scalars(sa.select(Notification).where(
                Notification.id.in_(list(results)))).all()
            for row in rows:
                error = results[row.id]
                if error is None:
                    row.status, row.sent_at, row.last_error = "sent", now, None
                    report.sent += 1
                elif isinstance(error, Permanent) or row.attempts >= self.policy.max_attempts:
                    row.status, row.last_error = "dead", str(error)[:1000]
                    report.dead += 1
                    report.errors[row.id] = str(error)
                else:
                    row.status, row.last_error = "pending", str(error)[:1000]
                    row.next_attempt_at = now + self.policy.backoff(row.attempts)
                    report.retried += 1
                    report.errors[row.id] = str(error)
