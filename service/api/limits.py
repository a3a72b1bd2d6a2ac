"""Request body size limit (plain ASGI): a 413 problem before the body is read in full."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["BodySizeLimit"]


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` (by Content-Length, or while streaming)."""

    def __init__(self, app: Callable[..., Any], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, send)
            return
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(scope, send)

    async def _refuse(self, scope: dict[str, Any], send: Any) -> None:
        body = json.dumps({
            "type": "urn:pledgeflow:problem:payload-too-large", "title": "Payload too large",
            "status": 413, "detail": f"request bodies are limited to {self.max_bytes} bytes",
            "instance": scope.get("path", "")}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """An HTTPException, so that FastAPI's body parsing re-raises it (any other error while
    reading the body becomes its 400 "error parsing the body") and the problem handler answers
    413; raised outside the routes, ``BodySizeLimit`` answers it itself."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request bodies are limited to {max_bytes} bytes")
