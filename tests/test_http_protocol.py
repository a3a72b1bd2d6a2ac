"""service.api.http: uvicorn's httptools protocol writing a response's head and body at once.

A small ASGI app is served by uvicorn with that protocol on a loopback socket, and spoken to
with plain sockets, so what is checked is what goes over the wire."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from service.api.http import PROTOCOL, _HeldWrites

RELEASE = threading.Event()  # the streaming endpoint's body waits for the test to set it


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/stream":  # the head now, the body only once the client has seen the head
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        while not RELEASE.is_set():
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"later", "more_body": False})
        return
    body = f"hello {path}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=PROTOCOL, loop="uvloop", lifespan="on",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _read_until(conn: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    while data.count(marker) < count:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_keep_alive_and_pipelined_requests_get_whole_responses_in_order(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until(conn, b"hello /two")
        conn.sendall(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n")
        data += _read_until(conn, b"hello /three")
    responses = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(responses) == 3
    for response, path in zip(responses, (b"/one", b"/two", b"/three"), strict=True):
        head, _, body = response.partition(b"\r\n\r\n")
        assert b"content-length: " + str(len(body)).encode() in head
        assert body == b"hello " + path


def test_connection_close_is_answered_in_full_then_closed(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nhello /bye")


def test_a_head_whose_body_comes_later_is_not_held_for_it(server: int) -> None:
    """The body is sent only after the client has read the head: were the head held until
    the body, neither would ever come (the read times out and the test fails)."""
    RELEASE.clear()
    with socket.create_connection(("127.0.0.1", server), timeout=5) as conn:
        conn.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_until(conn, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        assert b"later" not in head
        RELEASE.set()
        rest = _read_until(conn, b"0\r\n\r\n")
    assert b"5\r\nlater\r\n" in head + rest


class _Transport:
    """Records writes (the one thing ``_HeldWrites`` changes); closing is recorded too."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def test_head_and_body_go_out_in_one_write_and_a_lone_write_at_the_end_of_the_turn() -> None:
    loop = asyncio.new_event_loop()
    try:
        transport = _Transport()
        held = _HeldWrites(transport, loop)  # type: ignore[arg-type]
        held.write(b"HEAD\r\n\r\n")
        held.write(b"body")
        assert transport.writes == [b"HEAD\r\n\r\nbody"]
        held.write(b"alone")
        assert transport.writes == [b"HEAD\r\n\r\nbody"]
        loop.run_until_complete(asyncio.sleep(0))  # the end of the loop's turn
        assert transport.writes == [b"HEAD\r\n\r\nbody", b"alone"]
        held.write(b"last")
        held.close()  # what is held goes out before the close
        assert transport.writes[-1] == b"last" and transport.closed
        assert held.get_extra_info("peername") == "info peername"
    finally:
        loop.close()


def test_the_protocol_hooks_a_method_uvicorn_still_has() -> None:
    # Should uvicorn rename the hook, the subclass would silently write twice again.
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    from service.api.http import OneWriteHttpToolsProtocol

    assert callable(vars(HttpToolsProtocol).get("_start_asgi_task"))
    assert "_start_asgi_task" in vars(OneWriteHttpToolsProtocol)
    assert "transport" in RequestResponseCycle.__init__.__code__.co_varnames
