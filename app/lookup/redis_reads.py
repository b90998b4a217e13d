"""The lookup server's Redis reads on one plain connection: RESP2 over an asyncio protocol
parsed by hiredis, commands pipelined, each reply delivered from ``data_received``.

Why not redis-py here: under load the lookup server's event loop spends milliseconds per
iteration answering cached clients, and a read through redis-py's asyncio client (pool,
locks, stream reader, retries) waited several iterations for its reply: ~10 ms for a
2-client read, measured, so the few lookups that missed the cache made the p99. Here a
read is written when it is issued and completed when its reply arrives.

Plain TCP (``redis://``) and Unix sockets (``unix://``); TLS (``rediss://``) falls back to
:class:`app.lookup.store.ClientReader` (redis-py). The URL's password, user name and db
are honoured.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.projection.scripts import READ, read_args, read_rows

_SHA = hashlib.sha1(READ.encode()).hexdigest().encode()


def encode(*args: bytes | str) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Resp(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(RedisConnectionError(f"connection lost: {exc}"))


class DirectReader:
    """The lookup's batched reads (``app.projection.scripts.READ``) on one connection."""

    def __init__(self, url: str, namespace: str, timeout: float = 5.0,
                 connect_timeout: float = 2.0) -> None:
        self.opts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.ns = namespace
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._conn: _Resp | None = None
        self._connecting: asyncio.Future[_Resp] | None = None

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith(("redis://", "unix://"))

    async def _connect(self) -> _Resp:
        loop = asyncio.get_running_loop()
        o = self.opts
        if "path" in o:
            coro = loop.create_unix_connection(_Resp, o["path"])
        else:
            coro = loop.create_connection(_Resp, o.get("host", "localhost"), o.get("port", 6379))
        try:
            _, proto = await asyncio.wait_for(coro, self.connect_timeout)
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        hello = []
        if o.get("password"):
            hello.append(encode("AUTH", *([o["username"]] if o.get("username") else []),
                                o["password"]))
        if o.get("db"):
            hello.append(encode("SELECT", str(o["db"])))
        for reply in [await r for r in [self._send(proto, c) for c in hello]]:
            if isinstance(reply, hiredis.ReplyError):
                assert proto.transport is not None
                proto.transport.close()
                raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")
        return proto

    def _send(self, proto: _Resp, command: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        assert proto.transport is not None
        proto.waiters.append(fut)
        proto.transport.write(command)
        return fut

    async def _call(self, command: bytes) -> Any:
        proto = self._conn
        if proto is None or proto.transport is None:
            connecting = self._connecting
            if connecting is None:
                connecting = self._connecting = asyncio.ensure_future(self._connect())
            try:
                proto = self._conn = await asyncio.shield(connecting)
            finally:
                if self._connecting is connecting and connecting.done():
                    self._connecting = None
        fut = self._send(proto, command)
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, fut, proto)
        try:
            return await fut
        finally:
            timer.cancel()

    async def read(self, ids: Sequence[str], month: str, dims: Sequence[str]
                   ) -> list[bytes | dict[str, str]]:
        """As :meth:`app.lookup.store.ClientReader.read`."""
        args = read_args(self.ns, ids, month, dims)
        rows = await self._call(encode(b"EVALSHA", _SHA, b"0", *args))
        if isinstance(rows, hiredis.ReplyError) and str(rows).startswith("NOSCRIPT"):
            rows = await self._call(encode(b"EVAL", READ, b"0", *args))
        if isinstance(rows, hiredis.ReplyError):
            raise ResponseError(str(rows))
        return read_rows(rows)

    async def close(self) -> None:
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.close()
        self._conn = None


def _expire(fut: asyncio.Future[Any], proto: _Resp) -> None:
    """No reply in time: the connection's replies can no longer be matched; drop it."""
    if not fut.done():
        fut.set_exception(RedisTimeoutError("Redis did not answer in time"))
    if proto.transport is not None:
        proto.transport.close()
