"""uvicorn's HTTP/1.1 protocol with the deadlines it lacks, and a cap on connections.

uvicorn closes an idle keep-alive connection, but a connection that sends nothing, or
only part of its request head, or a body that never ends, stays open for as long as the
client likes; and every connection is accepted however many are open. This subclass of
its h11 protocol adds:

* a header deadline: a connection whose request head is not complete within
  ``header_timeout`` seconds of connecting (or of its previous answer) is closed (the
  body has its own deadline in :mod:`.middleware`, which answers 408; uvicorn closes a
  connection whose body was left unread after the answer);
* a connection cap: beyond ``max_connections`` open connections a new one is answered
  503 and closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["guarded_protocol"]

log = logging.getLogger("cnnlab.serve")

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: 54\r\n\r\n"
    b'{"detail": "too many connections; try again shortly"}\n'
)


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a header deadline and a connection cap."""

    header_timeout: float = 10.0
    max_connections: int = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d open", len(self.connections) - 1)
            transport.write(_BUSY)
            transport.close()
            return
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._follow_state()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a malformed request head, as the app's JSON ``detail``."""
        body = json.dumps({"detail": "invalid HTTP request (malformed request line or headers)"})
        head = (
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            f"connection: close\r\ncontent-length: {len(body) + 1}\r\n\r\n"
        )
        log.info("refused a malformed request head: %s", msg)
        self.transport.write(head.encode() + body.encode() + b"\n")
        self.transport.close()

    def _follow_state(self) -> None:
        """Keep the header deadline while a request head is awaited, and only then.

        A head arriving in pieces does not move the deadline: trickling is what it is for.
        """
        if self.conn.their_state is h11.IDLE:
            if self._deadline is None:
                self._arm(self.header_timeout)
        else:
            self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is not h11.IDLE:  # a request is being answered
            return
        log.info("closed a connection: no request head within %g seconds", self.header_timeout)
        self.transport.close()


def guarded_protocol(header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits, for ``uvicorn.Config(http=)``."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": float(header_timeout),
            "max_connections": int(max_connections),
        },
    )
