"""The lookup server's Redis side: batched reads of clients' pre-rendered documents (whole
hashes where there is none) and the invalidation listener of its in-memory cache.

Invalidations use Redis client-side caching in broadcasting mode (Redis >= 6): one
connection asks ``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <namespace>:`` and
subscribes to ``__redis__:invalidate``; Redis then announces every key written under the
namespace. The server drops a client's cached document when its hash is announced and
the whole cache when the generation key is (a rebuild switched). While the listener is
not subscribed (start-up, Redis restarting, a Redis without tracking) the server caches
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from app.projection.scripts import READ, read_args, read_rows

log = logging.getLogger("loyalty.lookup")
CHANNEL = "__redis__:invalidate"

class Reader(Protocol):
    """What the lookup server reads with (``ClientReader`` or ``DirectReader``)."""

    ns: str

    async def read(self, ids: Sequence[str], month: str, dims: Sequence[str]
                   ) -> list[bytes | dict[str, str]]: ...

    async def close(self) -> None: ...


def open_reader(url: str, namespace: str, connect_timeout: float = 2.0) -> Reader:
    """The lookup's reader: :class:`app.lookup.redis_reads.DirectReader` where it can connect
    (``redis://``, ``unix://``), else redis-py (TLS)."""
    from app.lookup.redis_reads import DirectReader

    if DirectReader.supports(url):
        return DirectReader(url, namespace, connect_timeout=connect_timeout)
    return ClientReader.from_url(url, namespace, socket_connect_timeout=connect_timeout)


class ClientReader:
    """Reads many clients' documents in one round trip (redis-py)."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.ns = namespace
        self._read = redis.register_script(READ)

    @classmethod
    def from_url(cls, url: str, namespace: str, **kwargs: Any) -> ClientReader:
        opts: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0,
                                "max_connections": 8, "timeout": 5.0}
        opts.update(kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(url, **opts)
        return cls(aioredis.Redis(connection_pool=pool), namespace)

    async def read(self, ids: Sequence[str], month: str, dims: Sequence[str]
                   ) -> list[bytes | dict[str, str]]:
        """Client ids, the reader's month and dimensions -> per client its pre-rendered
        ``doc`` (see app.projection.scripts) or, where there is none that serves the
        reader, its hash ({}: unknown client)."""
        return read_rows(await self._read(args=read_args(self.ns, ids, month, dims)))

    async def close(self) -> None:
        await self.redis.aclose()


class Invalidations:
    """Keeps one tracking connection subscribed; reports keys written and its own state.

    ``on_keys(keys)``: keys written under the namespace (None: the database was flushed).
    ``on_live(live)``: True once subscribed (announcements flow from then on), False when
    the connection is lost (announcements may have been missed).
    """

    def __init__(self, url: str, namespace: str, on_keys: Callable[[list[str] | None], None],
                 on_live: Callable[[bool], None], backoff: float = 0.5) -> None:
        self.url = url
        self.prefix = namespace + ":"
        self.on_keys = on_keys
        self.on_live = on_live
        self.backoff = backoff
        self.live = False

    async def run(self) -> None:
        delay = self.backoff
        while True:
            client = aioredis.Redis.from_url(self.url, decode_responses=True, socket_timeout=None,
                                             socket_connect_timeout=2.0,
                                             single_connection_client=True, protocol=2)
            try:
                await self._listen(client)
            except ResponseError as exc:  # no client tracking here: no cache
                log.warning("lookup cache invalidation unavailable (%s): every lookup reads "
                            "Redis", exc)
                return
            except (RedisError, OSError) as exc:
                log.warning("lookup cache invalidation lost: %s: %s", type(exc).__name__, exc)
            finally:
                self._set_live(False)
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _listen(self, client: aioredis.Redis) -> None:
        own = await client.client_id()
        await client.client_tracking_on(clientid=own, prefix=[self.prefix], bcast=True)
        conn: Any = client.connection
        await conn.send_command("SUBSCRIBE", CHANNEL)
        await conn.read_response()  # the subscribe confirmation (RESP2: a reply)
        self._set_live(True)
        while True:
            msg = await conn.read_response()
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == "message":
                payload = msg[2]
                self.on_keys(None if payload is None else list(payload))

    def _set_live(self, live: bool) -> None:
        if live != self.live:
            self.live = live
            self.on_live(live)
