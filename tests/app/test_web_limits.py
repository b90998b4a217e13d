"""app.serving.limits on a real aiohttp server: a trickled request head is cut after the
header timeout, surplus connections get a 503, normal requests are untouched."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web, web_server

from app.serving import limits


@pytest.fixture
def installed() -> object:
    original = web_server.RequestHandler
    limits.install(header_timeout=1.5, max_connections=3)
    yield
    web_server.RequestHandler = original  # type: ignore[misc]


async def test_header_timeout_and_connection_limit(installed: object) -> None:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        # a normal request on a kept-alive connection, twice
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
        # a trickle: one byte every 0.3 s is cut after the header timeout, not kept forever
        trickle_r, trickle_w = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        for byte in b"GET /hello HTTP/1.1\r\nHost: xxxxxxxxxxxx":
            if trickle_r.at_eof() or trickle_w.is_closing():
                break
            try:
                trickle_w.write(bytes([byte]))
                await trickle_w.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.3)
            if time.monotonic() - started > 6:
                break
        await asyncio.wait_for(trickle_r.read(), 5)
        assert 1.5 <= time.monotonic() - started < 5.0
        # connections beyond the limit: 503 and closed
        extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        answers = [await asyncio.wait_for(r.read(), 5) for r, _ in extra[-1:]]
        assert answers[0].startswith(b"HTTP/1.1 503") and b"too many connections" in answers[0]
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")  # the first one still works
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        for _, w in extra:
            w.close()
        writer.close()
    finally:
        await runner.cleanup()
