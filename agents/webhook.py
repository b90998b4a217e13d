"""Optional webhook delivery of scenario actions (``LOYALTY_WEBHOOK_URL``).

A separate agent consumes the actions topic and POSTs each action (the CloudEvent, JSON
structured mode, ``Idempotency-Key: <event id>``) to the URL. Connection errors, timeouts,
408/425/429 and 5xx are retried with exponential backoff (``LOYALTY_WEBHOOK_BACKOFF``
seconds, doubled per retry, at most 60 s); after ``LOYALTY_WEBHOOK_ATTEMPTS`` attempts, or
at once on another 4xx, the action goes to the dead-letter topic
(``LOYALTY_TOPIC_ACTIONS_DLQ``) with the reason in headers. Segment processing never waits
for it: it is another agent on another topic, and a slow endpoint only fills this agent's
buffer, which pauses fetching of the actions topic partitions alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

if TYPE_CHECKING:
    import faust

log = logging.getLogger("loyalty.webhook")
RETRY_STATUS = frozenset({408, 425, 429})
MAX_DELAY = 60.0


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None = None  # last HTTP status (None: no response)
    error: str = ""
    permanent: bool = False  # a 4xx that is not worth retrying


def delays(attempts: int, backoff: float, cap: float = MAX_DELAY) -> list[float]:
    """Waits between attempts: backoff, 2*backoff, 4*backoff... at most ``cap``."""
    return [min(cap, backoff * 2**i) for i in range(max(0, attempts - 1))]


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRY_STATUS


async def deliver(session: aiohttp.ClientSession, url: str, body: bytes, *, attempts: int,
                  backoff: float, timeout: float = 10.0, event_id: str = "",
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Delivery:
    """POST ``body`` until a 2xx, a permanent failure or ``attempts`` tries."""
    headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    if event_id:
        headers["Idempotency-Key"] = event_id
    waits = delays(attempts, backoff)
    status: int | None = None
    error = ""
    for n in range(1, attempts + 1):
        try:
            async with session.post(url, data=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
                status = resp.status
                if 200 <= status < 300:
                    return Delivery(True, n, status)
                error = f"HTTP {status}"
                if not retryable(status):
                    return Delivery(False, n, status, error, permanent=True)
        except (TimeoutError, aiohttp.ClientError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:300]
        if n < attempts:
            log.info("webhook attempt %d/%d failed (%s); retrying in %.1fs", n, attempts, error, waits[n - 1])
            await sleep(waits[n - 1])
    return Delivery(False, attempts, status, error)


def dlq_headers(d: Delivery, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("reason", b"webhook_rejected" if d.permanent else b"webhook_failed"),
        ("detail", d.error.encode()),
        ("status", str(d.status or "").encode()),
        ("attempts", str(d.attempts).encode()),
        ("source-topic", topic.encode()),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]


def register_webhook(app: faust.App, settings: Any, actions: Any, only_type: str | None = None) -> None:
    """Add the webhook agent on the ``actions`` topic."""
    dlq = app.topic(settings.topic_actions_dlq, key_type=bytes, value_type=bytes)
    url = settings.webhook_url

    @app.agent(actions, name="webhook")
    async def webhook(stream: Any) -> None:
        async with aiohttp.ClientSession() as session:
            async for event in stream.events():
                raw: bytes = event.value
                try:
                    doc = orjson.loads(raw)
                    kind, event_id = doc.get("type"), str(doc.get("id", ""))
                except (orjson.JSONDecodeError, AttributeError):
                    kind, event_id = None, ""
                if only_type is not None and kind is not None and kind != only_type:
                    continue
                d = await deliver(session, url, raw, attempts=settings.webhook_attempts,
                                  backoff=settings.webhook_backoff, event_id=event_id)
                if not d.ok:
                    msg = event.message
                    log.warning("webhook: action %s to the DLQ after %d attempt(s): %s",
                                event_id, d.attempts, d.error)
                    await dlq.send(key=event.key, value=raw,
                                   headers=dlq_headers(d, msg.topic, msg.partition, msg.offset))
