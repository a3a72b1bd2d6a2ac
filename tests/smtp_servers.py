"""Real SMTP servers on loopback for the delivery tests — no mocks of SMTP.

* ``RecordingServer`` — aiosmtpd behind a ``Controller``: accepts everything and keeps each
  envelope, its raw bytes and the parsed message (so a test reads the Message-ID, the subject,
  the text and HTML parts and the action links exactly as a mail client would);
* ``ScriptedHandler`` — refuses with scripted replies (``421 …``, ``451 …``, ``550 …``) for the
  first N DATA commands — counted per Message-ID (each message's first N attempts) or per
  server (the server's first N messages) — then accepts; it can refuse at RCPT as well;
* ``HangingHandler`` — the first attempt(s) of each message hang in DATA far longer than the
  client's timeout (the connection is left dangling; a late "250" would be a re-send the
  Message-ID makes recognisable);
* ``DroppingServer`` — a raw asyncio server speaking just enough ESMTP that closes the socket
  after reading part of the DATA payload, for its first N messages, then behaves;
* ``free_port`` — a loopback port with nothing listening (a mail server that is down).

Every server binds 127.0.0.1 on a port of its own (port 0 unless told) and runs in a thread of
its own. The ``smtp`` fixture hands out a ``Servers`` pool that stops whatever it started, and
checks that no server thread is left behind, even when the test fails; a test module uses it
with ``smtp = smtp_servers.smtp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import cached_property
from typing import Any

import pytest
from aiosmtpd.controller import Controller

__all__ = ["Received", "Recorder", "RecordingHandler", "ScriptedHandler", "HangingHandler",
           "SmtpServer", "DroppingServer", "Servers", "free_port", "smtp", "STOP_TIMEOUT"]

HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0  # seconds to wait for a server thread to end
LINK_RE = re.compile(r"https?://[^\s\"'<>]+/a/[A-Za-z0-9_\-]+")


def free_port() -> int:
    """A loopback port nobody listens on (yet): connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One message a server accepted: the envelope, the bytes and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @cached_property
    def message(self) -> EmailMessage:
        """Parsed on first use (parsing in the server thread would slow every delivery)."""
        return parse(self.raw)

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "")

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def part(self, subtype: str) -> str:
        """The decoded ``text/<subtype>`` part ('' when there is none)."""
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else ""  # type: ignore[union-attr]

    def links(self) -> list[str]:
        """The action-link URLs in the text part, in order."""
        return LINK_RE.findall(self.part("plain"))


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


class Recorder:
    """Thread-safe store of accepted messages (servers append, the test thread reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[Received] = []

    def add(self, mail_from: str, rcpt_tos: Sequence[str], raw: bytes) -> None:
        with self._lock:
            self._messages.append(Received(mail_from, tuple(rcpt_tos), raw))

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def message_ids(self) -> Counter[str]:
        """How often each Message-ID arrived (a count above one is a re-send)."""
        return Counter(m.message_id for m in self.messages)

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()


class RecordingHandler:
    """aiosmtpd handler: accept every message and record it."""

    def __init__(self) -> None:
        self.recorder = Recorder()

    @staticmethod
    def _raw(envelope: Any) -> bytes:
        raw = envelope.original_content or envelope.content
        return raw if isinstance(raw, bytes) else str(raw).encode()

    def _accept(self, envelope: Any) -> str:
        self.recorder.add(envelope.mail_from, envelope.rcpt_tos, self._raw(envelope))
        return "250 2.0.0 OK: queued"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._accept(envelope)


class ScriptedHandler(RecordingHandler):
    """Refuse with ``replies`` (in order) for the first N attempts, then accept.

    ``per="message"`` counts attempts per Message-ID (every message gets the script), and
    ``per="server"`` counts the server's DATA commands (its first N messages are refused).
    ``rcpt_replies`` refuses recipients the same way at RCPT TO (per server).
    """

    def __init__(self, replies: Sequence[str] = (), *, per: str = "message",
                 rcpt_replies: Sequence[str] = ()) -> None:
        super().__init__()
        assert per in ("message", "server")
        self.replies, self.per, self.rcpt_replies = list(replies), per, list(rcpt_replies)
        self._attempts: Counter[str] = Counter()
        self._rcpts = 0
        self.refused: list[tuple[str, str]] = []  # (Message-ID, reply) of every refusal

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        n, self._rcpts = self._rcpts, self._rcpts + 1
        if n < len(self.rcpt_replies):
            self.refused.append(("", self.rcpt_replies[n]))
            return self.rcpt_replies[n]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message_id = str(parse(self._raw(envelope))["Message-ID"] or "")
        key = message_id if self.per == "message" else "*"
        n = self._attempts[key]
        self._attempts[key] += 1
        if n < len(self.replies):
            self.refused.append((message_id, self.replies[n]))
            return self.replies[n]
        return self._accept(envelope)


class HangingHandler(RecordingHandler):
    """The first ``hang_first`` attempts of each message (per Message-ID) sit in DATA for
    ``seconds`` before answering — far longer than the client waits; later attempts are
    accepted at once. A late acceptance is recorded too: that is what a real server does."""

    def __init__(self, *, hang_first: int = 1, seconds: float = 30.0) -> None:
        super().__init__()
        self.hang_first, self.seconds = hang_first, seconds
        self._attempts: Counter[str] = Counter()
        self.hung: list[str] = []  # Message-IDs of the attempts left hanging

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message_id = str(parse(self._raw(envelope))["Message-ID"] or "")
        n = self._attempts[message_id]
        self._attempts[message_id] += 1
        if n < self.hang_first:
            self.hung.append(message_id)
            await asyncio.sleep(self.seconds)  # cancelled when the server stops
        return self._accept(envelope)


class _LoopbackController(Controller):
    """aiosmtpd's Controller on 127.0.0.1, on port 0 (the kernel picks) or a given port."""

    def __init__(self, handler: Any, port: int = 0) -> None:
        super().__init__(handler, hostname=HOST, port=port, ready_timeout=10.0)

    def _trigger_server(self) -> None:
        if self.port == 0:  # learn the port the kernel gave before connecting to it
            assert self.server is not None
            self.port = int(self.server.sockets[0].getsockname()[1])
        super()._trigger_server()


class SmtpServer:
    """An aiosmtpd server on loopback with the given handler (started on construction)."""

    def __init__(self, handler: RecordingHandler, port: int = 0) -> None:
        self.handler = handler
        self._controller = _LoopbackController(handler, port)
        self._controller.start()
        self.port: int = self._controller.port
        self._thread: threading.Thread | None = self._controller._thread

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def recorder(self) -> Recorder:
        return self.handler.recorder

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop listening and end the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._controller.stop(no_assert=True)
        thread.join(STOP_TIMEOUT)
        assert not thread.is_alive(), f"SMTP server thread on port {self.port} did not stop"


class DroppingServer:
    """A raw asyncio server speaking minimal ESMTP. For its first ``drop_first`` messages it
    answers DATA with 354, reads ``drop_after`` bytes of the payload and closes the socket;
    after that it reads the whole payload, answers 250 and records the message."""

    def __init__(self, *, drop_first: int = 1, drop_after: int = 256, port: int = 0) -> None:
        self.drop_first, self.drop_after = drop_first, drop_after
        self.recorder = Recorder()
        self.dropped = 0
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name=f"dropping-smtp-{port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(STOP_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"dropping SMTP server did not start: {self._error!r}")

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def messages(self) -> list[Received]:
        return self.recorder.messages

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._session, HOST, self.port)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._converse(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                        ) -> None:
        async def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        await reply("220 dropper.test ESMTP")
        mail_from, rcpts = "", []
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout=STOP_TIMEOUT)
            if not line:
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb == b"EHLO":
                await reply("250-dropper.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432")
            elif verb == b"HELO":
                await reply("250 dropper.test")
            elif verb == b"MAIL":
                mail_from, rcpts = line.decode().split(":", 1)[1].strip(), []
                await reply("250 2.1.0 OK")
            elif verb == b"RCPT":
                rcpts.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                await reply("250 2.1.5 OK")
            elif verb in (b"RSET", b"NOOP"):
                await reply("250 OK")
            elif verb == b"QUIT":
                await reply("221 Bye")
                return
            elif verb == b"DATA":
                await reply("354 End data with <CR><LF>.<CR><LF>")
                if self.dropped < self.drop_first:
                    self.dropped += 1
                    await asyncio.wait_for(reader.readexactly(self.drop_after),
                                           timeout=STOP_TIMEOUT)
                    return  # mid-payload: the finally clause cuts the connection
                lines = []
                while True:
                    chunk = await asyncio.wait_for(reader.readline(), timeout=STOP_TIMEOUT)
                    if not chunk or chunk == b".\r\n":
                        break
                    lines.append(chunk[1:] if chunk.startswith(b".") else chunk)
                self.recorder.add(mail_from.strip("<>"), rcpts, b"".join(lines))
                await reply("250 2.0.0 OK: queued")
            else:
                await reply("502 5.5.2 Command not recognized")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        thread.join(STOP_TIMEOUT)
        assert not thread.is_alive(), f"dropping SMTP server on port {self.port} did not stop"


class Servers:
    """Starts test servers and stops every one of them at the end."""

    def __init__(self) -> None:
        self._started: list[SmtpServer | DroppingServer] = []
        self._threads: list[threading.Thread] = []

    def _keep(self, server: Any) -> Any:
        self._started.append(server)
        self._threads.append(server._thread)
        return server

    def recording(self, port: int = 0) -> SmtpServer:
        return self._keep(SmtpServer(RecordingHandler(), port))

    def scripted(self, replies: Sequence[str] = (), *, per: str = "message",
                 rcpt_replies: Sequence[str] = (), port: int = 0) -> SmtpServer:
        return self._keep(SmtpServer(ScriptedHandler(replies, per=per,
                                                     rcpt_replies=rcpt_replies), port))

    def hanging(self, *, hang_first: int = 1, seconds: float = 30.0, port: int = 0
                ) -> SmtpServer:
        return self._keep(SmtpServer(HangingHandler(hang_first=hang_first, seconds=seconds),
                                     port))

    def dropping(self, *, drop_first: int = 1, drop_after: int = 256, port: int = 0
                 ) -> DroppingServer:
        return self._keep(DroppingServer(drop_first=drop_first, drop_after=drop_after,
                                         port=port))

    def stop_all(self) -> None:
        errors = []
        for server in reversed(self._started):
            try:
                server.stop()
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        self._started.clear()
        leftover = [t for t in self._threads if t.is_alive()]
        self._threads.clear()
        if errors:
            raise errors[0]
        assert not leftover, f"SMTP server threads left running: {leftover}"

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


@pytest.fixture
def smtp() -> Iterator[Servers]:
    """A pool of loopback SMTP servers, all stopped (threads joined) after the test."""
    with Servers() as servers:
        yield servers
