"""uvicorn's httptools protocol, writing each response's head and body to the socket together.

uvicorn writes the status line and headers when the application sends
``http.response.start`` and the body when it sends ``http.response.body``: two ``send``
calls, and on loopback two trips through the kernel's TCP stack, for every response. Here a
response's first write is held until its next one (normally the body, sent in the same turn of
the event loop) and both go out in one call. Whatever is still held at the end of that turn —
the head of a streaming response whose body comes later — is written then, so nothing waits
longer than one turn of the loop. Used by ``pledgeflow serve`` and ``pledgeflow up``
(``http=PROTOCOL``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

__all__ = ["PROTOCOL", "OneWriteHttpToolsProtocol"]

#: What uvicorn's ``http`` option takes to use this protocol.
PROTOCOL = "service.api.http:OneWriteHttpToolsProtocol"


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose request cycles write through a ``_HeldWrites``."""

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.transport = _HeldWrites(cycle.transport, self.loop)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)


class _HeldWrites:
    """A transport for one request cycle: holds the first write until the next write or the
    end of the loop's turn, whichever comes first; everything else is the real transport's."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
            self._transport.write(data)
        elif data:
            self._held = data
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._held is not None:
            data, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
