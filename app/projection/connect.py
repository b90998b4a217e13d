"""The start-up check of Redis: wait up to ``LOYALTY_CONNECT_TIMEOUT`` for a PING, saying so
once, then stop with one line (the URL's password masked). Once running, the projector and
the servers retry Redis outages on their own."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from app.errors import AppError
from app.settings import Settings, mask_url

if TYPE_CHECKING:
    from app.projection.store import Projection

log = logging.getLogger("loyalty.redis")


def projection_of(settings: Settings) -> Projection:
    """The service's projection (:class:`app.projection.store.Projection`: its app id's
    namespace, its business time zone) in the Redis of ``settings``."""
    from app.projection.store import Projection, namespace

    return Projection.from_url(settings.redis_url, namespace(settings.app_id), settings.timezone)


class RedisUnavailable(AppError):
    """Redis did not answer within the connect timeout."""


async def wait_for_redis(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    said = False
    while True:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=2.0)
        try:
            await client.ping()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"Redis at {mask_url(url)} did not answer within {timeout:g} s "
                                       f"(LOYALTY_CONNECT_TIMEOUT): {type(exc).__name__}: {exc}") from None
            if not said:
                said = True
                log.warning("waiting for Redis at %s (up to %g s): %s: %s", mask_url(url), timeout,
                            type(exc).__name__, exc)
            await asyncio.sleep(1.0)
        finally:
            await client.aclose()
