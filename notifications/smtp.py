"""SMTP delivery over reused connections (aiosmtplib), and how failures are classified.

``PLEDGEFLOW_SMTP_URL`` forms: ``smtp://host:port`` (plain), ``smtp+starttls://…`` (upgrade
with STARTTLS), ``smtps://…`` (TLS from the start); credentials as ``user:password@``.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiosmtplib

from notifications.mime import Outgoing

__all__ = ["SmtpTarget", "Transient", "Permanent", "Connection", "classify"]


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect."""

    host: str
    port: int
    tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    verify_tls: bool = True

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 10.0, verify_tls: bool = True) -> SmtpTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps", "smtp+starttls"):
            raise ValueError(f"SMTP URL must start smtp://, smtps:// or smtp+starttls://: {url}")
        default_port = {"smtp": 25, "smtps": 465, "smtp+starttls": 587}[parts.scheme]
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or default_port,
                   tls=parts.scheme == "smtps", starttls=parts.scheme == "smtp+starttls",
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   timeout=timeout, verify_tls=verify_tls)


class Transient(Exception):
    """Worth retrying later: 4xx replies, time-outs, dropped or refused connections."""


class Permanent(Exception):
    """Retrying will not help: 5xx replies (unknown mailbox, rejected content)."""


def classify(exc: BaseException) -> Exception:
    """Map an aiosmtplib / network error to Transient or Permanent."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [e.code for e in exc.recipients]
        permanent = codes and all(c >= 500 for c in codes)
        return Permanent(str(exc)) if permanent else Transient(str(exc))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return Permanent(f"{exc.code} {exc.message}") if exc.code >= 500 else \
            Transient(f"{exc.code} {exc.message}")
    return Transient(f"{type(exc).__name__}: {exc}")


class Connection:
    """One SMTP connection, opened on first use and reopened after a failure."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target
        self._client: aiosmtplib.SMTP | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        t = self.target
        context = None
        if t.tls or t.starttls:  # building a context costs ~0.3 s of CPU: only when used
            context = ssl.create_default_context()
            if not t.verify_tls:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        client = aiosmtplib.SMTP(hostname=t.host, port=t.port, timeout=t.timeout, use_tls=t.tls,
                                 start_tls=t.starttls if t.starttls else False,
                                 tls_context=context)
        await client.connect()
        if t.username:
            await client.login(t.username, t.password or "")
        return client

    async def send(self, message: Outgoing) -> None:
        """Send one message; raise Transient or Permanent on failure."""
        loop = asyncio.get_running_loop()
        if self._client is not None and self._loop is not loop:
            # Opened in an earlier event loop (``asyncio.run(run_once())`` per pass): its
            # transport belongs to that loop and cannot be used, nor closed, from this one.
            self._client = None
        try:
            if self._client is None or not self._client.is_connected:
                self._client = await self._connect()
                self._loop = loop
            # asyncio.timeout rather than wait_for: no extra task for every email
            async with asyncio.timeout(self.target.timeout * 3):
                await self._client.sendmail(
                    message.sender, message.recipients, message.data,
                    mail_options=["SMTPUTF8"] if message.smtputf8 else [])
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self.close()
            raise classify(exc) from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is not asyncio.get_running_loop():
            return  # opened in another event loop: nothing to say to it from this one
        if client is not None and client.is_connected:
            try:
                await asyncio.wait_for(client.quit(), timeout=2)
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()
