"""Connection limits for the worker's HTTP server (Faust runs aiohttp's).

aiohttp 3.14 has neither a request-header timeout nor a connection limit, and each byte a
client sends cancels its idle timer: a client sending one byte every few seconds, or many
silent connections, held the server's sockets for good (measured: silent and partial
connections still open after 85 s). :func:`install` makes aiohttp's servers in this process
build their connections with :class:`GuardedRequestHandler`:

* the head of a request must be complete ``header_timeout`` seconds after its first byte
  (more bytes do not extend it), else the connection is closed;
* beyond ``max_connections`` open connections a new one gets a 503 JSON answer and is closed.

It subclasses aiohttp's ``RequestHandler`` and reads its request counter
(``_request_count``, which aiohttp increments per parsed request head); the tests hold
that behaviour (tests/app/test_api.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web_protocol, web_server

_BODY = b'{"error":"unavailable","message":"too many connections"}'
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BODY), _BODY))


class GuardedRequestHandler(web_protocol.RequestHandler):
    header_timeout = 10.0
    max_connections = 1024

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager: Any = self._manager
        if manager is not None and len(manager.connections) >= self.max_connections:
            transport.write(_REFUSED)  # type: ignore[attr-defined]
            transport.close()
            self._force_close = True
            return
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        timer = getattr(self, "_head_timer", None)
        if self._request_count != before:  # a head is complete
            if timer is not None:
                timer.cancel()
                self._head_timer = None
        elif data and timer is None and not self._request_in_progress:
            self._head_timer = self._loop.call_later(self.header_timeout, self._head_late, before)

    def _head_late(self, count: int) -> None:
        self._head_timer = None
        if self._request_count == count and self.transport is not None:
            self.force_close()
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)


def install(header_timeout: float, max_connections: int) -> None:
    """Make every aiohttp server of this process use :class:`GuardedRequestHandler`."""
    GuardedRequestHandler.header_timeout = header_timeout
    GuardedRequestHandler.max_connections = max_connections
    web_server.RequestHandler = GuardedRequestHandler  # type: ignore[attr-defined]
