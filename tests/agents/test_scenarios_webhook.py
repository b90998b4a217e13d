"""Webhook delivery against a local aiohttp server on 127.0.0.1 that fails the first N calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from agents.webhook import Delivery, delays, deliver, dlq_headers, retryable


@dataclass
class Flaky:
    """Answers ``fail_status`` to the first ``failures`` calls, then 204."""

    failures: int
    fail_status: int = 503
    calls: list[tuple[str, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((request.headers.get("Idempotency-Key", ""), await request.read()))
        if len(self.calls) <= self.failures:
            return web.Response(status=self.fail_status)
        return web.Response(status=204)


async def _serve(flaky: Flaky) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", flaky.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def test_backoff_doubles_up_to_a_cap() -> None:
    assert delays(5, 0.5) == [0.5, 1.0, 2.0, 4.0]
    assert delays(1, 0.5) == []
    assert delays(10, 10.0)[-1] == 60.0
    assert retryable(503) and retryable(429) and retryable(408) and not retryable(400)


async def test_retries_until_the_server_answers(session: aiohttp.ClientSession) -> None:
    flaky = Flaky(failures=2)
    runner, url = await _serve(flaky)
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    try:
        d = await deliver(session, url, b'{"id": "a1"}', attempts=5, backoff=0.25, event_id="a1", sleep=sleep)
    finally:
        await runner.cleanup()
    assert d == Delivery(True, 3, 204)
    assert waits == [0.25, 0.5]
    assert flaky.calls == [("a1", b'{"id": "a1"}')] * 3


async def test_gives_up_after_the_maximum_for_the_dead_letter_topic(session: aiohttp.ClientSession) -> None:
    flaky = Flaky(failures=100)
    runner, url = await _serve(flaky)
    try:
        d = await deliver(session, url, b"{}", attempts=3, backoff=0.01)
    finally:
        await runner.cleanup()
    assert (d.ok, d.attempts, d.status, d.error, d.permanent) == (False, 3, 503, "HTTP 503", False)
    assert len(flaky.calls) == 3
    headers = dict(dlq_headers(d, "actions", 2, 41))
    assert headers["reason"] == b"webhook_failed" and headers["attempts"] == b"3"
    assert headers["status"] == b"503" and headers["source-offset"] == b"41"


async def test_a_client_error_is_not_retried(session: aiohttp.ClientSession) -> None:
    flaky = Flaky(failures=100, fail_status=400)
    runner, url = await _serve(flaky)
    try:
        d = await deliver(session, url, b"{}", attempts=5, backoff=0.01)
    finally:
        await runner.cleanup()
    assert (d.ok, d.attempts, d.permanent) == (False, 1, True)
    assert dict(dlq_headers(d, "t", 0, 0))["reason"] == b"webhook_rejected"


async def test_connection_refused_is_retried(session: aiohttp.ClientSession) -> None:
    flaky = Flaky(failures=0)
    runner, url = await _serve(flaky)
    await runner.cleanup()  # nobody listens there any more
    d = await deliver(session, url, b"{}", attempts=2, backoff=0.01)
    assert (d.ok, d.attempts, d.status) == (False, 2, None)
    assert "ClientConnectorError" in d.error or "Connect" in d.error
