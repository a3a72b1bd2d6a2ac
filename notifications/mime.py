"""Outgoing emails as the bytes SMTP sends: multipart/alternative, a text and an HTML part.

The dispatcher sends thousands of emails that differ only in recipient, Message-ID and link
tokens. Building each as an ``EmailMessage`` and flattening it through ``email.generator``
cost ~1 ms of CPU an email even with parsed headers cached (3.9 ms without) — more than
rendering it — because the standard library parses every header value into a token tree and,
for each body, tries both quoted-printable and base64 to pick the shorter. This module writes
the same message directly (0.04–0.08 ms): the subject as RFC 2047 base64 encoded words, the
configured sender through ``email.header.Header`` once, bodies in base64 (UTF-8 Chinese text
is no longer in base64 than in quoted-printable). Every line is CRLF-terminated and 7-bit; a
recipient address that is not ASCII is written as UTF-8 (RFC 6532) and flagged, so the sender
asks for SMTPUTF8.

tests/test_mime.py checks that the standard parser reads these bytes as it reads the
``EmailMessage`` they replace: the same headers, the same decoded text and HTML.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache

__all__ = ["Outgoing", "build"]

CRLF = "\r\n"


@dataclass(frozen=True)
class Outgoing:
    """One email ready for ``SMTP.sendmail``: its envelope and its bytes."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool = False


def _plain(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a line break in the {name} header: {value!r}")
    return value


def _encoded(name: str, value: str) -> str:
    """A header line (folded, without its final CRLF) for free text such as a subject: as it
    is if short ASCII, else RFC 2047 base64 encoded words of at most 42 bytes (68 characters)
    each, never splitting a character, one a line."""
    _plain(name, value)
    if value.isascii() and len(name) + len(value) <= 76:
        return f"{name}: {value}"
    words, chunk, size = [], [], 0
    for char in value:
        n = len(char.encode("utf-8"))
        if size + n > 42:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    words.append("".join(chunk))
    return f"{name}: " + f"{CRLF} ".join(
        "=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words)


@lru_cache(maxsize=64)
def _from_header(mail_from: str) -> tuple[str, str]:
    """The From line and the envelope sender of a configured ``Name <address>``."""
    name, address = parseaddr(_plain("From", mail_from))
    if not address:
        raise ValueError(f"not an e-mail address: {mail_from!r}")
    if name.isascii():
        return f"From: {formataddr((name, address))}", address
    line = f"From: {Header(name, 'utf-8', header_name='From').encode(linesep=CRLF)}"
    fits = len(line.rsplit(CRLF, 1)[-1]) + len(address) + 3 <= 78
    return f"{line}{' ' if fits else CRLF + ' '}<{address}>", address  # folded if need be


def _base64(text: str) -> str:
    if not text.endswith("\n"):  # as EmailMessage.set_content ends a text part
        text += "\n"
    return base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", CRLF)


def build(*, mail_from: str, to: str, subject: str, message_id: str, date: datetime,
          attempt: int, lang: str, text: str, html: str) -> Outgoing:
    """The email's bytes; ValueError if a header value holds a line break."""
    from_line, sender = _from_header(mail_from)
    _plain("To", to)
    # Base64 never holds "-", so no line of a part can be taken for this boundary.
    boundary = "==pf-" + hashlib.sha256(f"{message_id}/{attempt}".encode()).hexdigest()[:32]
    head = CRLF.join((
        from_line,
        f"To: {to}",
        _encoded("Subject", subject),
        f"Message-ID: {_plain('Message-ID', message_id)}",
        f"Date: {format_datetime(date)}",
        "Auto-Submitted: auto-generated",
        f"X-Pledgeflow-Attempt: {attempt}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"',
        f"Content-Language: {'zh-CN' if lang == 'zh' else 'en'}",
    ))
    parts = "".join(
        f"--{boundary}{CRLF}Content-Type: text/{subtype}; charset=\"utf-8\"{CRLF}"
        f"Content-Transfer-Encoding: base64{CRLF}{CRLF}{_base64(body)}"
        for subtype, body in (("plain", text), ("html", html)))
    message = f"{head}{CRLF}{CRLF}{parts}--{boundary}--{CRLF}"
    return Outgoing(sender, (to,), message.encode("utf-8"), smtputf8=not to.isascii())
