"""The embedded default's mail catcher: a real SMTP server on loopback (aiosmtpd) that keeps
every message in a Maildir, so a newcomer can read what pledgeflow sent (the web app shows it
at ``/dev/mail``)."""

from __future__ import annotations

import mailbox
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller

__all__ = ["start_catcher", "CaughtMail", "read_caught", "count_caught", "MaildirHandler"]


class MaildirHandler:
    """aiosmtpd handler: accept every message and store it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(path, create=True)
        for sub in ("tmp", "new", "cur"):  # create=True skips these if the folder exists
            (path / sub).mkdir(exist_ok=True)

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.maildir.add(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start_catcher(path: Path, host: str = "127.0.0.1", port: int = 8025) -> Controller:
    """Start the catcher in a background thread; call ``.stop()`` on the result to end it."""
    controller = Controller(MaildirHandler(path), hostname=host, port=port)
    controller.start()
    return controller


@dataclass(frozen=True)
class CaughtMail:
    """One caught message, parsed."""

    key: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def to(self) -> str:
        return str(self.message["To"] or "")

    @property
    def date(self) -> str:
        return str(self.message["Date"] or "")

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else ""


def _arrival(key: str) -> tuple[int, int]:
    """Maildir keys start "<seconds>.M<microseconds>P…": their arrival time."""
    seconds, _, rest = key.partition(".M")
    micros = rest.split("P", 1)[0]
    return (int(seconds), int(micros)) if seconds.isdigit() and micros.isdigit() else (0, 0)


def read_caught(path: Path, *, limit: int = 200) -> list[CaughtMail]:
    """The newest ``limit`` caught messages, newest first."""
    if not path.exists():
        return []
    box = mailbox.Maildir(path, create=False)
    parser = BytesParser(policy=policy.default)
    keys = sorted(box.keys(), key=_arrival, reverse=True)[:limit]
    return [CaughtMail(key, parser.parsebytes(box.get_bytes(key)))  # type: ignore[arg-type]
            for key in keys]


def count_caught(path: Path) -> int:
    """How many messages the catcher holds (their files, none of them parsed)."""
    return len(mailbox.Maildir(path, create=False).keys()) if path.exists() else 0
