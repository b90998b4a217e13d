"""The audience export: hashed contacts projected from the clients changelog into the real
local Redis (no mocks), served as CSV by the API (the aiohttp app as mounted in the
worker) and by ``loyalty audience``."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agents.projector import Projector
from app.metrics import Metrics
from app.projection.audience import Contacts, write_contacts
from app.projection.store import Projection, Update, drop_generation, namespace
from app.serving.api import Api
from app.serving.web import mount
from app.settings import Settings
from app.wire import codecs
from rules.record.state import dumps as dump_state
from rules.record.state import loads as load_state
from tests.app.conftest import AS_OF, AUTH, TOKEN, Data

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Rec:
    """A Kafka record as the projector reads it."""

    key: bytes | None
    value: bytes | None
    topic: str = "t-clients-changelog"
    partition: int = 0


def with_contacts(data: Data) -> tuple[dict[bytes, bytes], dict[str, tuple[str, str]]]:
    """``data``'s table with digests in the profiles: both, e-mail only, phone only, none
    (in turn); and each client's expected (e-mail digest, phone digest)."""
    table: dict[bytes, bytes] = {}
    expected: dict[str, tuple[str, str]] = {}
    for n, (key, value) in enumerate(sorted(data.table.items())):
        due, raw = codecs.split_table_value(value)
        state = load_state(raw)
        email = sha(f"client{n}@example.com") if n % 4 in (0, 1) else ""
        phone = sha(f"7916555{n:04d}") if n % 4 in (0, 2) else ""
        if email:
            state.profile["email_sha256"] = email
        if phone:
            state.profile["phone_sha256"] = phone
        state.profile["gender"] = "f"  # other profile data: never projected
        table[key] = codecs.table_value(due, dump_state(state))
        expected[key.decode()] = (email, phone)
    return table, expected


def projector(data: Data, proj: Projection) -> Projector:
    pipeline = SimpleNamespace(metrics=Metrics.create(), engine=data.engine, scenarios=None)
    return Projector(Settings.from_env(), pipeline, proj)


async def project(data: Data, proj: Projection, table: dict[bytes, bytes]) -> None:
    """The change events, then the changelog records through the projector's own path."""
    await proj.apply([Update.from_event(e) for e in data.events])
    await projector(data, proj).apply_metrics([Rec(k, v) for k, v in table.items()])


async def _app(data: Data, proj: Projection) -> web.Application:
    app = web.Application()
    mount(app, Api(proj, data.engine, lambda: AS_OF), TOKEN, lambda: data.table.items())
    return app


Filled = tuple[Projection, dict[str, tuple[str, str]]]


@pytest.fixture
async def filled(data: Data, redis_url: str, ns: str) -> AsyncIterator[Filled]:
    """The projection of ``data`` with digests (and each client's expected digests)."""
    proj = Projection.from_url(redis_url, ns)
    table, expected = with_contacts(data)
    await project(data, proj, table)
    yield proj, expected
    await proj.close()


@pytest.fixture
async def client(data: Data, filled: tuple[Projection, Any]) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(await _app(data, filled[0]))) as c:
        yield c


def biggest(data: Data, dim: str = "boostfeel") -> tuple[str, set[str]]:
    seg = Counter(s[dim] for s in data.segments.values()).most_common(1)[0][0]
    return seg, {c for c, s in data.segments.items() if s[dim] == seg}


async def test_changelog_projects_the_digests_and_nothing_else(
        data: Data, filled: Filled) -> None:
    proj, expected = filled
    for cid, (email, phone) in expected.items():
        h = await proj.client(cid)
        assert (h.get("email_sha256", ""), h.get("phone_sha256", "")) == (email, phone)
        assert "gender" not in h and not any("@" in v or '"f"' in v for v in h.values())


async def test_audience_csv_over_http(client: TestClient[Any, Any], data: Data,
                                      filled: Filled,
                                      caplog: pytest.LogCaptureFixture) -> None:
    _, expected = filled
    seg, members = biggest(data)
    path = f"/segments/boostfeel/{seg}/members"
    for target, header in (("generic", "email_sha256,phone_sha256"), ("google", "Email"),
                           ("meta", "email,phone")):
        width = header.count(",") + 1  # google: the e-mail digest only
        want = sorted(expected[c][:width] for c in members if any(expected[c][:width]))
        left_out = len(members) - len(want)
        assert want and left_out  # the data has both kinds
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="loyalty.audience"):
            resp = await client.get(path, params={"format": "audience", "target": target}, headers=AUTH)
            body = await resp.text()
        assert resp.status == 200, body
        assert resp.headers["Content-Type"].startswith("text/csv")
        assert resp.headers["Cache-Control"] == "no-store"
        assert "-audience.csv" in resp.headers["Content-Disposition"]
        lines = body.split("\r\n")
        assert lines[0] == header and lines[-1] == ""
        rows = sorted(tuple(r) for r in csv.reader(io.StringIO("\n".join(lines[1:-1]))))
        assert rows == want  # one row per member with a digest; every cell a digest or empty
        assert f"{len(members)} members, {len(want)} rows, {left_out} left out" in caplog.text
    # the default target; an unknown segment is an empty list
    resp = await client.get(path, params={"format": "audience"}, headers=AUTH)
    assert (await resp.text()).startswith("email_sha256,phone_sha256\r\n")
    resp = await client.get("/segments/boostfeel/no_such/members", params={"format": "audience"},
                            headers=AUTH)
    assert resp.status == 200 and await resp.text() == "email_sha256,phone_sha256\r\n"


async def test_audience_errors_and_auth(client: TestClient[Any, Any], data: Data) -> None:
    seg, _ = biggest(data)
    path = f"/segments/boostfeel/{seg}/members"
    resp = await client.get(path, params={"format": "audience"})
    assert resp.status == 401
    resp = await client.get(path, params={"format": "audience"}, headers={"Authorization": "Bearer no"})
    assert resp.status == 401
    resp = await client.get(path, params={"format": "audience", "target": "tiktok"}, headers=AUTH)
    assert resp.status == 400 and (await resp.json())["parameter"] == "target"
    resp = await client.get("/segments/nodim/x/members", params={"format": "audience"}, headers=AUTH)
    assert resp.status == 404
    resp = await client.get(path, params={"format": "xml"}, headers=AUTH)
    assert resp.status == 400 and "audience" in (await resp.json())["message"]


async def test_audience_redis_down_is_503(data: Data) -> None:
    proj = Projection.from_url("redis://127.0.0.1:1/0", namespace("down"), socket_connect_timeout=0.5)
    async with TestClient(TestServer(await _app(data, proj))) as c:
        resp = await c.get("/segments/boostfeel/vip/members", params={"format": "audience"}, headers=AUTH)
        assert resp.status == 503
        assert (await resp.json())["error"] == "unavailable"


async def test_other_responses_carry_no_digest(client: TestClient[Any, Any], data: Data,
                                               filled: Filled) -> None:
    _, expected = filled
    digests = {d for pair in expected.values() for d in pair if d}
    seg, _ = biggest(data)
    bodies = [await (await client.get(f"/clients/{cid}", headers=AUTH)).text() for cid in expected]
    for params in ({"format": "csv"}, {"format": "json", "limit": "1000"}):
        bodies.append(await (await client.get(f"/segments/boostfeel/{seg}/members", params=params,
                                               headers=AUTH)).text())
    for path in ("/segments", "/reports/revenue?dimension=boostfeel", "/reports/transitions?dimension=rfm"):
        bodies.append(await (await client.get(path, headers=AUTH)).text())
    text = "\n".join(bodies)
    assert not [d for d in digests if d in text]


async def test_digests_follow_the_changelog_order(data: Data, redis_url: str, ns: str) -> None:
    proj = Projection.from_url(redis_url, ns)
    cid, value = next(iter(sorted(data.table.items())))
    key = cid.decode()
    await proj.apply([Update.from_event(e) for e in data.events if e["subject"] == key])
    p = projector(data, proj)

    def record(clock_delta: int, **profile: str) -> Rec:
        due, raw = codecs.split_table_value(value)
        state = load_state(raw)
        state.clock += clock_delta
        state.profile.update(profile)
        return Rec(cid, codecs.table_value(due, dump_state(state)))

    a, b = sha("a@example.com"), sha("b@example.com")
    await p.apply_metrics([record(0, email_sha256=a, phone_sha256=sha("79160000000"))])
    assert (await proj.client(key))["email_sha256"] == a
    await p.apply_metrics([record(100, email_sha256=b)])  # newer: the phone is gone from the record
    h = await proj.client(key)
    assert h["email_sha256"] == b and "phone_sha256" not in h
    await p.apply_metrics([record(50, email_sha256=a)])  # older (a redelivery): no-op
    assert (await proj.client(key))["email_sha256"] == b
    # not a digest (a raw value by mistake): never written, and the field is cleared
    await p.apply_metrics([record(200, email_sha256="Anna@Example.com", phone_sha256=sha("x").upper())])
    h = await proj.client(key)
    assert "email_sha256" not in h and "phone_sha256" not in h
    # a client the projection does not hold is not created by its digests
    assert await write_contacts(proj, [Contacts("nobody", 10**9, a, "")]) == 0
    assert await proj.client("nobody") == {}
    await proj.close()


def test_audience_command(data: Data, redis_url: str, tmp_path: Path) -> None:
    app_id = f"aud-{uuid.uuid4().hex[:10]}"
    table, expected = with_contacts(data)
    seg, members = biggest(data, "rfm")

    async def fill() -> None:
        proj = Projection.from_url(redis_url, namespace(app_id))
        await project(data, proj, table)
        await proj.close()

    async def drop() -> None:
        proj = Projection.from_url(redis_url, namespace(app_id))
        await drop_generation(proj.redis, proj.ns + ":")
        await proj.close()

    asyncio.run(fill())
    env = {**os.environ, "LOYALTY_APP_ID": app_id, "REDIS_URL": redis_url}
    try:
        out = tmp_path / "aud.csv"
        run = subprocess.run([sys.executable, "-m", "app", "audience", "--dimension", "rfm", "--segment", seg,
                              "--target", "meta", "--out", str(out)], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        lines = out.read_bytes().decode().split("\r\n")
        assert lines[0] == "email,phone"
        want = sorted(expected[c] for c in members if any(expected[c]))
        assert sorted(tuple(r) for r in csv.reader(io.StringIO("\n".join(lines[1:-1])))) == want
        summary = orjson.loads(run.stderr.strip().splitlines()[-1])
        assert summary == {"dimension": "rfm", "segment": seg, "members": len(members), "rows": len(want),
                           "left_out": len(members) - len(want)}
        assert not (tmp_path / "aud.csv.part").exists()
        # stdout by default; an unknown dimension says so and leaves no file
        raw = subprocess.run([sys.executable, "-m", "app", "audience", "--dimension", "rfm", "--segment", seg],
                             env=env, cwd=ROOT, capture_output=True, timeout=60)
        assert raw.returncode == 0 and raw.stdout.startswith(b"email_sha256,phone_sha256\r\n")
        assert raw.stdout.count(b"\r\n") == len(want) + 1
        bad = tmp_path / "bad.csv"
        run = subprocess.run([sys.executable, "-m", "app", "audience", "--dimension", "nope", "--segment", "x",
                              "--out", str(bad)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and "no dimension 'nope'" in run.stderr
        assert not bad.exists() and not (tmp_path / "bad.csv.part").exists()
    finally:
        asyncio.run(drop())
