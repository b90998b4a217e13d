"""The POS lookup server (app.lookup.server) over a projection in the real local Redis: the same
documents as the API, its version-checked cache, errors, and HTTP/1.1 handling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agents.projector import state_updates
from app.lookup.redis_reads import DirectReader
from app.lookup.server import LookupServer
from app.lookup.store import ClientReader, Reader, open_reader
from app.projection.store import Days, Projection, Update, namespace
from app.serving.api import client_document
from tests.app.conftest import AS_OF, AUTH, TOKEN, Data, filled
from tests.app.test_api import _app

pytestmark = pytest.mark.integration


async def _server(redis_url: str, ns: str, data: Data, cache: int = 1000,
                  token: str = TOKEN, tracking: bool = False, clock: datetime = AS_OF,
                  dims: list[str] | None = None) -> LookupServer:
    dims = [d.id for _, d in data.engine.dims] if dims is None else dims
    server = LookupServer(open_reader(redis_url, ns), dims, Days("UTC"),
                          lambda: clock, token, cache_size=cache,
                          invalidations_url=redis_url if tracking else None)
    await server.start("127.0.0.1", 0)
    return server


@pytest.fixture
async def env(data: Data, redis_url: str, ns: str) -> AsyncIterator[tuple[str, Projection]]:
    proj = await filled(redis_url, ns, data)
    server = await _server(redis_url, ns, data)
    try:
        yield f"http://127.0.0.1:{server.port}", proj
    finally:
        await server.close()
        await proj.close()


async def fetch(url: str, headers: dict[str, str] | None = None,
                method: str = "GET") -> tuple[int, Any, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as s, s.request(
            method, url, headers=AUTH if headers is None else headers) as resp:
        body = await resp.read()
        assert resp.content_type in ("application/json", "text/plain")
        return resp.status, orjson.loads(body) if resp.content_type == "application/json" else body, resp


async def test_same_documents_as_the_api(env: tuple[str, Projection], data: Data,
                                         redis_url: str, ns: str) -> None:
    url, proj = env
    async with TestClient(TestServer(await _app(data, proj))) as api:
        for cid in list(data.segments)[:30]:
            expected = await (await api.get(f"/clients/{cid}", headers=AUTH)).json()
            for _ in range(2):  # a miss, then a cache hit
                status, body, _ = await fetch(f"{url}/clients/{cid}")
                assert status == 200
                assert body == expected


@pytest.mark.parametrize("clock", ["2026-06-15", "2026-07-01", "2026-09-30", "2026-04-10"])
async def test_pre_rendered_documents_equal_the_hash_rendering(data: Data, redis_url: str,
                                                               ns: str, clock: str) -> None:
    """Every client, with the clock in the month of its latest change (mostly June: the
    document with last month's segments of that month), in a later month (every dimension's
    last month is its current segment), and before its changes (rendered from the hash)."""
    proj = await filled(redis_url, ns, data)
    now = datetime.fromisoformat(clock + "T12:00:00+00:00")
    dims = [d.id for _, d in data.engine.dims]
    server = await _server(redis_url, ns, data, cache=0, clock=now)
    try:
        months = set()
        for cid in data.segments:
            h = await proj.client(cid)
            months.add(h["doc"][:7])
            expected = client_document(cid, h, dims, Days("UTC"), int(now.timestamp()))
            status, body, _ = await fetch(f"http://127.0.0.1:{server.port}/clients/{cid}")
            assert (status, body) == (200, expected), cid
        reads = server.stats.reads
        if clock == "2026-04-10":
            assert reads == {"document": 0, "hash": len(data.segments)}
        else:
            assert reads == {"document": len(data.segments), "hash": 0}
        assert len(months) > 1  # both documents were read
    finally:
        await server.close()
        await proj.close()


async def test_documents_not_used_where_they_do_not_fit(data: Data, redis_url: str,
                                                        ns: str) -> None:
    """A server configured without one of the document's dimensions, and hashes written
    before documents existed, are rendered from the hash: the same JSON as the API."""
    proj = await filled(redis_url, ns, data)
    server = await _server(redis_url, ns, data, cache=0, dims=["rfm"])
    cids = list(data.segments)[:20]
    try:
        for cid in cids:
            h = await proj.client(cid)
            expected = client_document(cid, h, ["rfm"], Days("UTC"), int(AS_OF.timestamp()))
            assert "boostfeel" in h and "boostfeel" not in expected["segments"]
            assert (await fetch(f"http://127.0.0.1:{server.port}/clients/{cid}"))[1] == expected
        assert server.stats.reads["hash"] == len(cids)
    finally:
        await server.close()
    server = await _server(redis_url, ns, data, cache=0)
    dims = [d.id for _, d in data.engine.dims]
    try:
        gen = await proj.generation()
        for cid in cids:
            key = f"{ns}:{gen}:c:{cid}"
            await proj.redis.hdel(key, "doc", *(f"{d}:j" for d in dims))
            h = await proj.client(cid)
            expected = client_document(cid, h, dims, Days("UTC"), int(AS_OF.timestamp()))
            assert (await fetch(f"http://127.0.0.1:{server.port}/clients/{cid}"))[1] == expected
        assert server.stats.reads["hash"] == len(cids)
        # the next write renders the document again
        cid = cids[0]
        h = await proj.client(cid)
        seg = h["boostfeel"]
        change = Update(cid, "boostfeel", "vip" if seg != "vip" else "loyal", seg,
                        at=int(AS_OF.timestamp()), rule="boostfeel.vip")
        assert await proj.apply([change]) == [1]
        h = await proj.client(cid)
        assert "rfm:j" not in h and "doc" not in h  # rfm was never re-rendered: no document
    finally:
        await server.close()
        await proj.close()


@pytest.mark.parametrize("kind", ["direct", "redis-py"])
async def test_both_readers(data: Data, redis_url: str, ns: str, kind: str) -> None:
    """The direct reader (reconnecting after a lost connection, reloading a flushed
    script) and the redis-py one (TLS URLs) read the same documents."""
    proj = await filled(redis_url, ns, data)
    reader: Reader = (DirectReader(redis_url, ns) if kind == "direct"
                      else ClientReader.from_url(redis_url, ns))
    dims = [d.id for _, d in data.engine.dims]
    try:
        cids = sorted(data.segments)[:25]
        expected = []
        for cid in cids:
            h = await proj.client(cid)
            expected.append(h["doc"].encode())
        assert await reader.read(cids, "2026-06", dims) == expected
        assert await reader.read(["nobody", cids[0]], "2026-06", dims) == [{}, expected[0]]
        rows = await reader.read(cids[:3], "2026-06", ["rfm"])  # other dimensions: hashes
        assert [r["boostfeel"] for r in rows if isinstance(r, dict)] == [
            (await proj.client(c))["boostfeel"] for c in cids[:3]]
        if isinstance(reader, DirectReader):
            assert reader._conn is not None and reader._conn.transport is not None
            reader._conn.transport.close()
            await asyncio.sleep(0.05)
            await proj.redis.script_flush()
            got = await asyncio.gather(*(reader.read([c], "2026-06", dims) for c in cids))
            assert [g[0] for g in got] == expected
    finally:
        await reader.close()
        await proj.close()


async def test_a_cached_client_is_never_stale(data: Data, redis_url: str, ns: str) -> None:
    proj = await filled(redis_url, ns, data)
    server = await _server(redis_url, ns, data)
    url = f"http://127.0.0.1:{server.port}/clients/"
    try:
        cid = next(iter(data.segments))
        before = (await fetch(url + cid))[1]
        assert server.cache == {}  # no invalidation subscription: nothing is cached
        seg = before["segments"]["boostfeel"]["segment"]
        new = "vip" if seg != "vip" else "loyal"
        change = Update(cid, "boostfeel", new, seg, at=int(AS_OF.timestamp()), rule="test")
        assert await proj.apply([change]) == [1]
        after = (await fetch(url + cid))[1]
        assert after["segments"]["boostfeel"]["segment"] == new
        assert after["segments"]["boostfeel"]["previous"] == seg
        # a rebuilt projection (new generation) is read at once
        gen = str(int(await proj.generation(0.0)) + 1)
        await proj.apply([u for k, v in data.table.items() if k.decode() == cid
                          for u in state_updates(data.engine, cid, v)], gen=gen)
        await proj.redis.set(proj.gen_key, gen)
        status, body, _ = await fetch(url + cid)
        assert status == 200  # the rebuilt generation has the table's segment, not the test's
        assert body["segments"]["boostfeel"]["segment"] == seg
        assert server.cache == {}
    finally:
        await server.close()
        await proj.close()


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_invalidated_cache_answers_without_redis(data: Data, redis_url: str,
                                                       ns: str) -> None:
    proj = await filled(redis_url, ns, data)
    server = await _server(redis_url, ns, data, tracking=True)
    url = f"http://127.0.0.1:{server.port}/clients/"
    try:
        async def live() -> bool:
            return server.live
        await _until(live)
        cid = next(iter(data.segments))
        first = (await fetch(url + cid))[1]
        assert (await fetch(url + cid))[1] == first
        assert server.stats.memory_hits == 1
        # a write announces the client's key: its next lookup reads Redis again
        seg = first["segments"]["boostfeel"]["segment"]
        new = "vip" if seg != "vip" else "loyal"
        await proj.apply([Update(cid, "boostfeel", new, seg, at=int(AS_OF.timestamp()))])

        async def updated() -> bool:
            body = (await fetch(url + cid))[1]
            return bool(body["segments"]["boostfeel"]["segment"] == new)
        await _until(updated)
        # a rebuild's generation switch drops everything cached
        gen = str(int(await proj.generation(0.0)) + 1)
        await proj.apply([u for k, v in data.table.items() if k.decode() == cid
                          for u in state_updates(data.engine, cid, v)], gen=gen)
        await proj.redis.set(proj.gen_key, gen)

        async def switched() -> bool:
            body = (await fetch(url + cid))[1]
            return bool(body["segments"]["boostfeel"]["segment"] == seg)
        await _until(switched)
        # the subscription lost: nothing is answered from memory until it is back
        server._live(False)
        hits = server.stats.memory_hits
        for _ in range(3):
            assert (await fetch(url + cid))[0] == 200
        assert server.stats.memory_hits == hits
    finally:
        await server.close()
        await proj.close()


async def test_announcement_during_a_read_keeps_the_row_out_of_the_cache(
        data: Data, redis_url: str, ns: str) -> None:
    server = await _server(redis_url, ns, data, tracking=False)
    try:
        watch: tuple[set[str], set[str]] = ({"a", "b:c:d"}, set())
        server.inflight.append(watch)
        server.cache["a"] = ("0/1", "2026-06", b"{")
        server._written([f"{ns}:0:c:a", f"{ns}:0:c:b:c:d", f"{ns}:0:seg:x:y", f"{ns}:0:cnt:x"])
        assert watch[1] == {"a", "b:c:d"} and "a" not in server.cache
        server.cache["a"] = ("0/1", "2026-06", b"{")
        epoch = server.epoch
        server._written([f"{ns}:gen"])
        assert server.cache == {} and server.epoch == epoch + 1
        server._written(None)
        assert server.epoch == epoch + 2
    finally:
        await server.close()


async def test_without_cache(data: Data, redis_url: str, ns: str) -> None:
    proj = await filled(redis_url, ns, data)
    server = await _server(redis_url, ns, data, cache=0)
    try:
        cid = next(iter(data.segments))
        for _ in range(2):
            status, body, _ = await fetch(f"http://127.0.0.1:{server.port}/clients/{cid}")
            assert status == 200 and body["client_id"] == cid
        assert server.cache == {}
    finally:
        await server.close()
        await proj.close()


async def test_errors(env: tuple[str, Projection]) -> None:
    url, _ = env
    status, body, _ = await fetch(f"{url}/clients/nobody")
    assert (status, body["error"]) == (404, "not_found")
    status, body, _ = await fetch(f"{url}/clients/{'x' * 300}")
    assert (status, body["parameter"]) == (400, "client_id")
    status, body, _ = await fetch(f"{url}/clients/%ff")
    assert (status, body["parameter"]) == (400, "client_id")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body, resp = await fetch(f"{url}/clients/c-1", headers)
        assert (status, body["error"]) == (401, "unauthorized")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = await fetch(f"{url}/segments")
    assert (status, body["error"]) == (404, "not_found")
    status, body, resp = await fetch(f"{url}/clients/c-1", method="POST")
    assert (status, body["error"], resp.headers["Allow"]) == (405, "method_not_allowed", "GET")
    status, body, _ = await fetch(f"{url}/health", {})
    assert (status, body) == (200, {"status": "ok"})
    status, text, _ = await fetch(f"{url}/metrics", {})
    assert status == 200 and b'loyalty_lookup_requests_total{status="404"} 2.0' in text


async def test_percent_encoded_ids(data: Data, env: tuple[str, Projection]) -> None:
    url, _ = env
    cid = next(iter(data.segments))
    encoded = "".join(f"%{b:02X}" for b in cid.encode())
    status, body, _ = await fetch(f"{url}/clients/{encoded}")
    assert status == 200 and body["client_id"] == cid


async def test_ids_of_any_characters(env: tuple[str, Projection]) -> None:
    url, proj = env
    ids = ["клиент-1", "a,b,1", "x%y", "12,3,"]  # multi-byte, and the read script's separators
    assert await proj.apply([Update(cid, "boostfeel", "vip", "", at=int(AS_OF.timestamp()))
                             for cid in ids]) == [1] * len(ids)
    for _ in range(2):
        for cid in ids:
            status, body, _ = await fetch(f"{url}/clients/{quote(cid, safe='')}")
            assert status == 200 and body["client_id"] == cid
            assert body["segments"]["boostfeel"]["segment"] == "vip"


async def test_redis_down_is_503(data: Data) -> None:
    reader = open_reader("redis://127.0.0.1:1/0", namespace("down"), connect_timeout=0.5)
    server = LookupServer(reader, ["boostfeel"], Days("UTC"), lambda: AS_OF, "")
    await server.start("127.0.0.1", 0)
    try:
        status, body, _ = await fetch(f"http://127.0.0.1:{server.port}/clients/c-1", {})
        assert (status, body["error"]) == (503, "unavailable")
    finally:
        await server.close()


async def _raw(url: str, payload: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    writer.close()
    return data


async def test_pipelining_keep_alive_and_close(data: Data, env: tuple[str, Projection]) -> None:
    url, _ = env
    a, b = list(data.segments)[:2]
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    payload = (f"GET /clients/{a} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
               f"GET /clients/nobody HTTP/1.1\r\nHost: x\r\n{auth}\r\n"
               f"GET /clients/{b} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").encode()
    out = await _raw(url, payload)
    heads = [chunk.split(b"\r\n", 1)[0] for chunk in out.split(b"HTTP/1.1 ")[1:]]
    assert heads == [b"200 OK", b"404 Not Found", b"200 OK"]
    assert out.index(f'"client_id":"{a}"'.encode()) < out.index(f'"client_id":"{b}"'.encode())
    assert b"Connection: close" in out.rsplit(b"HTTP/1.1 ", 1)[1]
    # HTTP/1.0 without keep-alive: one answer, then the server closes
    out = await _raw(url, f"GET /clients/{a} HTTP/1.0\r\n{auth}\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200 OK") and out.count(b"HTTP/1.1 ") == 1


async def test_malformed_and_oversized_requests(env: tuple[str, Projection]) -> None:
    url, _ = env
    out = await _raw(url, b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request") and b'"bad_request"' in out
    big = b"GET /clients/c-1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    out = await _raw(url, big)
    assert out.startswith(b"HTTP/1.1 431 ")
    body = b"GET /clients/c-1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100000
    out = await _raw(url, body)
    assert out.startswith(b"HTTP/1.1 413 ")


async def test_trickling_and_idle_connections_are_closed_and_connections_are_limited(
        data: Data, redis_url: str, ns: str) -> None:
    server = await _server(redis_url, ns, data)
    server.header_timeout, server.idle_timeout, server.max_connections = 2.0, 3.0, 3
    try:
        trickle = await asyncio.open_connection("127.0.0.1", server.port)
        idle = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        closed_after: dict[str, float] = {}

        async def drip() -> None:  # one byte a second: was kept open forever
            for byte in b"GET /clients/c-1 HTTP/1.1\r\nHost: x\r\n":
                trickle[1].write(bytes([byte]))
                await asyncio.sleep(0.5)
                if trickle[1].is_closing() or trickle[0].at_eof():
                    break

        async def wait_closed(name: str, reader: asyncio.StreamReader) -> None:
            await reader.read()  # EOF when the server closes
            closed_after[name] = time.monotonic() - started

        third = await asyncio.open_connection("127.0.0.1", server.port)
        fourth = await asyncio.open_connection("127.0.0.1", server.port)  # one too many
        refused = await asyncio.wait_for(fourth[0].read(), 5)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"too many connections" in refused
        third[1].close()
        await asyncio.wait_for(asyncio.gather(drip(), wait_closed("trickle", trickle[0]),
                                              wait_closed("idle", idle[0])), 15)
        assert 2.0 <= closed_after["trickle"] < 5.0  # header timeout, not reset by bytes
        assert 3.0 <= closed_after["idle"] < 6.0
    finally:
        await server.close()
