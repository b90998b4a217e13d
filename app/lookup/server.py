"""The POS lookup server: ``GET /clients/{client_id}`` on its own port, lean HTTP/1.1.

The worker's aiohttp API answers the same path, but a checkout lookup has a latency
budget (p99 <= 10 ms with 200 requests in flight) that neither fits: aiohttp's
per-request machinery alone (a handler returning a constant) measured 17.8k requests/s
and p99 24 ms at 200 connections on the 2-core development VM, and a worker's event loop
also runs stream batches of tens of milliseconds. So ``loyalty lookup`` is a separate
process (scale it out; ``SO_REUSEPORT`` lets several share a port) that does one thing:

* ``GET /clients/{client_id}``: the same JSON as the API (:func:`app.serving.api.client_document`),
  the same bearer token, the same JSON errors (400 naming ``client_id``, 401, 404, 503
  when Redis is unavailable).
* ``GET /health`` (public), ``GET /metrics`` (public, Prometheus: requests by status and
  a latency histogram). Other paths: 404; other methods: 405. Both JSON.

HTTP: keep-alive and pipelining (responses in request order); ``Connection: close`` and
HTTP/1.0 honoured; request line and headers limited to 16 KiB (431), bodies to 64 KiB
(413); malformed requests get 400 and the connection is closed; idle connections are
closed after ``idle_timeout`` seconds without a request, and a connection whose request
head has not arrived ``header_timeout`` seconds after its first byte (a trickle of bytes
does not keep it open); beyond ``max_connections`` a new connection gets 503 and is
closed. Parsing is httptools (llhttp), in
:mod:`app.lookup.http`.

Reads: at most ``MAX_READS`` reads are out at a time; the lookups that arrive meanwhile
go to Redis together as one ``EVALSHA`` of a Lua script that reads the current generation
and, per client, the document the projection pre-rendered on its last write (see
:mod:`app.projection.scripts`); the server only adds ``client_id`` and ``as_of``. A client
without a usable document (a hash of an older version, a clock before its latest change)
is read whole and rendered here. Reads go over one plain Redis connection
(:mod:`app.lookup.redis_reads`) whose replies complete their lookups as they arrive. So the
batch grows with the load and a burst of 200 requests costs a round trip or two.

Cache: the documents of up to ``cache_size`` clients (oldest out first), kept while the
invalidation subscription of :mod:`app.lookup.store` is live: a cached client is answered
from memory, with a fresh ``as_of``, and dropped as soon as Redis announces a write of its
hash (or of the generation key); an answer may then lag a write by that announcement's
delivery (milliseconds on one host). A row read while its key was announced is not
cached. While the subscription is down, nothing is cached and every lookup reads Redis.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import formatdate
from urllib.parse import unquote

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from app.lookup.http import Conn, Slot, error_json
from app.lookup.stats import Stats
from app.lookup.store import Invalidations, Reader
from app.projection.store import Days
from app.serving.api import ApiError, check_client_id, client_document, not_found
from rules.calendar import iso

log = logging.getLogger("loyalty.lookup")
MAX_READS = 2  # Redis reads in flight; lookups arriving meanwhile form the next batch


class LookupServer:
    """The protocol factory and request handling; ``start``/``close`` run it."""

    def __init__(self, reader: Reader, dims: Sequence[str], days: Days,
                 clock: Callable[[], datetime], token: str, idle_timeout: float = 60.0,
                 cache_size: int = 100_000, invalidations_url: str | None = None,
                 header_timeout: float = 10.0, max_connections: int = 4096) -> None:
        self.reader = reader
        self.dims = sorted(dims)
        self.days = days
        self.clock = clock
        self.expected = f"Bearer {token}".encode() if token else b""
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout  # a request's head must arrive within this
        self.max_connections = max_connections  # beyond: 503 and close
        self.cache_size = cache_size
        self.cache: dict[str, tuple[str, bytes]] = {}  # id -> (month, JSON head)
        self.stats = Stats()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self.stats)
        self.conns: set[Conn] = set()
        self.pending: list[tuple[str, Slot, Conn]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.scheduled = False
        self.date = b""
        self.server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        # invalidation-driven cache (see app.lookup.store): while live, hits skip Redis
        self.invalidations = (Invalidations(invalidations_url, reader.ns, self._written,
                                            self._live)
                              if invalidations_url and cache_size else None)
        self.live = False
        self.epoch = 0  # bumped when announcements may have been missed or all is stale
        self.inflight: list[tuple[set[str], set[str]]] = []  # (ids read, ids announced meanwhile)
        self._listener: asyncio.Task[None] | None = None
        self._stamp: tuple[int, str, bytes] = (-1, "", b"")

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._tick()
        self.server = await loop.create_server(lambda: Conn(self), host, port,
                                               reuse_port=reuse_port or None, backlog=2048)
        self._ticker = asyncio.ensure_future(self._ticks())
        if self.invalidations is not None:
            self._listener = asyncio.ensure_future(self.invalidations.run())

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for task in (self._ticker, self._listener):
            if task is not None:
                task.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.conns):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.reader.close()

    def _tick(self) -> None:
        self.date = formatdate(usegmt=True).encode()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._tick()
            now = time.monotonic()
            idle, slow = now - self.idle_timeout, now - self.header_timeout
            for conn in [c for c in self.conns if not c.queue and (
                    c.last < idle if c.reading_since is None else c.reading_since < slow)]:
                conn.close()  # idle, or a request trickling in (one byte every few seconds)

    # -- cache ------------------------------------------------------------------------------

    def _live(self, live: bool) -> None:
        self.live = self.stats.live = live
        self._drop_all()

    def _drop_all(self) -> None:
        """Forget every cached document; reads already out are not cached either."""
        self.cache.clear()
        self.epoch += 1

    def _written(self, keys: list[str] | None) -> None:
        """Keys written under the namespace: drop their cached documents."""
        if keys is None:  # flushed
            self._drop_all()
            return
        ns = self.reader.ns
        gen_key, skip = ns + ":gen", len(ns) + 1
        for key in keys:
            if key == gen_key:
                self._drop_all()
                continue
            _, _, tail = key[skip:].partition(":")  # "<gen>:c:<client id>"
            if tail.startswith("c:"):
                cid = tail[2:]
                self.cache.pop(cid, None)
                for ids, announced in self.inflight:
                    if cid in ids:
                        announced.add(cid)

    def _now(self) -> tuple[int, str, bytes]:
        """(now, its month, the response's as_of tail), computed once per second."""
        now = int(self.clock().timestamp())
        if now != self._stamp[0]:
            self._stamp = (now, self.days.month(now), b',"as_of":"%s"}' % iso(now).encode())
        return self._stamp

    # -- requests ---------------------------------------------------------------------------

    def handle(self, conn: Conn, method: bytes, url: bytes, auth: bytes, slot: Slot) -> None:
        path = url.split(b"?", 1)[0]
        if method != b"GET":
            slot.extra = b"Allow: GET\r\n"
            return conn.done(slot, 405, error_json("method_not_allowed", "only GET is served here"))
        if path == b"/health":
            return conn.done(slot, 200, b'{"status":"ok"}')
        if path == b"/metrics":
            slot.extra = f"Content-Type: {CONTENT_TYPE_LATEST}\r\n".encode()
            return conn.done(slot, 200, generate_latest(self.registry))
        if not path.startswith(b"/clients/") or path.count(b"/") != 2:
            return conn.done(slot, 404, error_json("not_found", "no such path on the lookup server"))
        if self.expected and not hmac.compare_digest(auth, self.expected):
            slot.extra = b'WWW-Authenticate: Bearer realm="loyalty"\r\n'
            return conn.done(slot, 401, error_json("unauthorized", "missing or invalid bearer token"))
        try:
            cid = path[9:].decode("utf-8")
            if "%" in cid:
                cid = unquote(cid, errors="strict")
            check_client_id(cid)
        except UnicodeDecodeError:
            return conn.done(slot, 400, error_json("bad_request", "client_id: not UTF-8", "client_id"))
        except ApiError as exc:
            return conn.done(slot, exc.status, error_json(exc.code, exc.message, exc.parameter))
        if self.live:
            hit = self.cache.get(cid)
            if hit is not None:
                _, month, as_of = self._now()
                if hit[0] == month:
                    self.stats.memory_hits += 1
                    return conn.done(slot, 200, hit[1] + as_of)
        self.pending.append((cid, slot, conn))
        if not self.scheduled and len(self.tasks) < MAX_READS:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        task = asyncio.ensure_future(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if self.pending and not self.scheduled:
            self._flush()  # what arrived while MAX_READS reads were out: the next batch

    async def _run(self, batch: list[tuple[str, Slot, Conn]]) -> None:
        now, month, as_of = self._now()  # a document is of one month (its last_month)
        watch: tuple[set[str], set[str]] = ({cid for cid, _, _ in batch}, set())
        self.inflight.append(watch)
        epoch = self.epoch
        try:
            rows = await self.reader.read([cid for cid, _, _ in batch], month, self.dims)
        except (RedisError, OSError) as exc:
            log.warning("projection unavailable: %s: %s", type(exc).__name__, exc)
            body = error_json("unavailable", "the projection store (Redis) is unavailable")
            for _, slot, conn in batch:
                conn.done(slot, 503, body)
            return
        except Exception:
            log.exception("lookup read failed")
            body = error_json("internal", "internal error")
            for _, slot, conn in batch:
                conn.done(slot, 500, body)
            return
        finally:
            self.inflight.remove(watch)
        # announced while the read was out: the row may be older than the announcement
        stale = watch[1] if epoch == self.epoch else watch[0]
        reads = self.stats.reads
        month_b = month.encode()
        for (cid, slot, conn), row in zip(batch, rows, strict=True):
            try:
                if isinstance(row, bytes):
                    reads["document"] += 1
                    docm, _, late, current, tail = row.split(b"|", 4)
                    head = b'{"client_id":%s,"segments":%s,%s' % (
                        orjson.dumps(cid), current if docm == month_b else late, tail)
                    status, body = 200, head + as_of
                elif row:
                    reads["hash"] += 1
                    body = orjson.dumps(client_document(cid, row, self.dims, self.days, now))
                    status, head = 200, body[:body.rindex(b',"as_of":')]
                else:
                    missing = not_found(cid)
                    status, body = 404, error_json(missing.code, missing.message)
                if status == 200 and self.live and cid not in stale and self.cache_size:
                    self._keep(cid, month, head)
            except Exception:
                log.exception("error rendering client %r", cid)
                status, body = 500, error_json("internal", "internal error")
            conn.done(slot, status, body)

    def _keep(self, cid: str, month: str, head: bytes) -> None:
        cache = self.cache
        if cid not in cache and len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # the oldest entry
        cache[cid] = (month, head)
