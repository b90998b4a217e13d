"""HTTP/1.1 for the POS lookup server (:mod:`app.lookup.server`): one connection's parsing
(httptools), pipelined requests answered in order, size limits and back-pressure.

The server behind a connection is anything with ``conns``, ``stats``, ``date`` and
``handle(conn, method, url, auth, slot)``; it answers each request with ``conn.done``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Protocol

import httptools
import orjson

from app.serving.api import error_body


class Server(Protocol):
    conns: set[Conn]
    stats: Any  # app.lookup.stats.Stats
    date: bytes
    max_connections: int

    def handle(self, conn: Conn, method: bytes, url: bytes, auth: bytes, slot: Slot) -> None: ...


MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
MAX_QUEUED = 128  # requests pipelined on one connection before reading pauses


def error_json(code: str, message: str, parameter: str | None = None) -> bytes:
    return orjson.dumps(error_body(code, message, parameter))


_REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found",
            405: b"Method Not Allowed", 413: b"Payload Too Large",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
            503: b"Service Unavailable"}


class Slot:
    """One request's place in its connection's response order."""

    __slots__ = ("extra", "keep", "payload", "started", "status")

    def __init__(self, keep: bool, started: float) -> None:
        self.status = 0
        self.payload = b""
        self.keep = keep
        self.started = started
        self.extra = b""


class Conn(asyncio.Protocol):
    """One client connection: httptools callbacks, ordered responses, back-pressure."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: deque[Slot] = deque()
        self.url = b""
        self.auth = b""
        self.size = 0
        self.failed = False
        self.paused = False
        self.last = time.monotonic()  # connected, or the last response written: idle since
        self.reading_since: float | None = None  # a request begun and not complete: since

    # -- transport --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        if len(self.server.conns) >= self.server.max_connections:
            body = error_json("unavailable", "too many connections")
            transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"  # type: ignore[attr-defined]
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            transport.close()
            self.failed = True
            return
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def resume_writing(self) -> None:
        self._resume()

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(400, "malformed HTTP request")

    def _fail(self, status: int, message: str) -> None:
        """A request that cannot be parsed or is too large: answer and close."""
        if self.failed:
            return
        self.failed = True
        code = {413: "too_large", 431: "too_large"}.get(status, "bad_request")
        slot = Slot(False, time.perf_counter())
        self.queue.append(slot)
        self.done(slot, status, error_json(code, message))

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.reading_since = time.monotonic()  # the header timeout runs from the first byte
        self.url = b""
        self.auth = b""
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value))
        if name.lower() == b"authorization":
            self.auth = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_HEAD + MAX_BODY:
            self._fail(413, "request body too large")
            raise httptools.HttpParserError("body too large")

    def _grow(self, n: int) -> None:
        self.size += n
        if self.size > MAX_HEAD:
            self._fail(431, "request line and headers are limited to 16 KiB")
            raise httptools.HttpParserError("head too large")

    def on_message_complete(self) -> None:
        self.reading_since = None
        if self.failed:
            return
        slot = Slot(self.parser.should_keep_alive(), time.perf_counter())
        self.queue.append(slot)
        if len(self.queue) >= MAX_QUEUED and self.transport is not None and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        self.server.handle(self, self.parser.get_method(), self.url, self.auth, slot)

    # -- responses --------------------------------------------------------------------------

    def done(self, slot: Slot, status: int, payload: bytes) -> None:
        slot.status, slot.payload = status, payload
        queue = self.queue
        if not queue or queue[0] is not slot:
            return  # an earlier request is still waiting: it writes this one too
        stats, date = self.server.stats, self.server.date
        out: list[bytes] = []
        keep = True
        while queue and queue[0].status:
            s = queue.popleft()
            ctype = b"" if s.extra.startswith(b"Content-Type") else b"Content-Type: application/json\r\n"
            out.append(b"HTTP/1.1 %d %s\r\n%s%sContent-Length: %d\r\nDate: %s\r\n%s\r\n%s" % (
                s.status, _REASONS.get(s.status, b"Error"), ctype, s.extra, len(s.payload), date,
                b"" if s.keep else b"Connection: close\r\n", s.payload))
            stats.observe(s.status, time.perf_counter() - s.started)
            if not s.keep:
                keep = False
                queue.clear()
                break
        if self.transport is None:
            return
        self.last = time.monotonic()
        self.transport.write(b"".join(out))
        if not keep:
            self.transport.close()
        elif self.paused and len(queue) < MAX_QUEUED // 2:
            self._resume()

    def _resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()
