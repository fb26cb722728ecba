"""The ASGI layer in front of every route: Host check, body size and time limits, security
headers, and the last word on a client that left or an error nothing else handled."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from cnnlab.serve.hosts import host_name
from cnnlab.serve.inputs import ApiError

log = logging.getLogger("cnnlab.serve")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'self'",
    ),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Guard:
    """In front of every route.

    Refuses a ``Host`` outside ``allowed_hosts`` (when given) with 400; a body over
    ``max_bytes`` (by Content-Length, and while reading) with 413; a body not received
    within ``body_timeout`` seconds of the route starting to read it with 408 (and closes
    the connection). A client that disconnects mid-upload is logged in one line; any other
    exception is logged once and answered 500, and the server goes on.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        body_timeout: float = 30.0,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        refusal = self._check_head(scope)
        if refusal is not None:
            await self._refuse(scope, receive, send_with_headers, *refusal)
            return

        received = 0
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, deadline
            if deadline is None:  # from the first read: a request may wait its turn first
                deadline = anyio.current_time() + self.body_timeout
            with anyio.move_on_after(deadline - anyio.current_time()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                raise ApiError(
                    408, f"request body not received within {self.body_timeout:g} seconds"
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, self._too_big())
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except ClientDisconnect:
            log.info(
                "client disconnected before sending its whole request (%s %s, %d bytes read)",
                scope["method"],
                scope["path"],
                received,
            )
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                detail = f"internal error ({type(exc).__name__})"
                await self._refuse(scope, receive, send_with_headers, 500, detail)

    def _check_head(self, scope: Scope) -> tuple[int, str] | None:
        """A (status, detail) refusal from the request head alone, or None."""
        hosts = [v for k, v in scope["headers"] if k == b"host"]
        if self.allowed_hosts is not None:
            name = host_name(hosts[0].decode("latin-1")) if len(hosts) == 1 else ""
            server = scope.get("server") or ("", 0)
            if name not in self.allowed_hosts and name != str(server[0]).lower():
                shown = hosts[0].decode("latin-1")[:80] if hosts else "(none)"
                return 400, f"Host {shown!r} is not a name of this server"
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0:
                    return 400, "bad Content-Length"
                if length > self.max_bytes:
                    return 413, self._too_big()
        return None

    def _too_big(self) -> str:
        return f"request body too large: the limit is {self.max_bytes:,} bytes"

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status)
        response.headers["connection"] = "close"
        await response(scope, receive, send)
