"""The Redis projection written by a real worker (real Kafka, real Redis, no mocks):
equal to the replay, rebuilt from Kafka, and caught up after a Redis outage."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.projector import rebuild
from app.batch.simulate import SimConfig, generate
from app.projection.store import CLIENT_FIELDS, Projection, drop_generation, namespace
from app.settings import Settings
from app.stream.faust_app import build_engine
from app.wire.kafka_io import client_key
from tests.integration.harness import (
    Worker,
    change_diff,
    free_port,
    produce_lines,
    replay,
    unique_env,
    wait_for_changes,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]


def _worker(tmp_path: Path, bootstrap: str, redis_url: str, name: str = "w") -> Worker:
    env = unique_env(bootstrap, tmp_path / name, LOYALTY_RULES=",".join(RULES),
                     LOYALTY_CLOCK=AS_OF, REDIS_URL=redis_url, LOYALTY_API_TOKEN="tok")
    return Worker(env, tmp_path / f"{name}.log")


async def _projected(settings: Settings, clients: set[str]) -> dict[tuple[str, str], str]:
    proj = Projection.from_url(settings.redis_url, namespace(settings.app_id))
    try:
        out: dict[tuple[str, str], str] = {}
        for cid in clients:
            for k, v in (await proj.client(cid)).items():
                if ":" not in k and k not in CLIENT_FIELDS:
                    out[(cid, k)] = v
        return out
    finally:
        await proj.close()


async def _transitions(settings: Settings) -> Counter[str]:
    proj = Projection.from_url(settings.redis_url, namespace(settings.app_id))
    try:
        total: Counter[str] = Counter()
        for dim in await proj.dimensions():
            for _, row in await proj.transitions(dim, "2000-01-01", "2100-01-01"):
                total.update({f"{dim}:{k}": n for k, n in row.items()})
        return total
    finally:
        await proj.close()


def wait_projection(settings: Settings, expected: dict[tuple[str, str], str],
                    timeout: float = 90.0) -> dict[tuple[str, str], str]:
    clients = {c for c, _ in expected}
    deadline = time.monotonic() + timeout
    got: dict[tuple[str, str], str] = {}
    while time.monotonic() < deadline:
        got = asyncio.run(_projected(settings, clients))
        if got == expected:
            return got
        time.sleep(1.0)
    return got


def _event_counts(events: list[dict[str, Any]]) -> Counter[str]:
    seen: dict[str, str] = {}
    for e in events:
        d = e["data"]
        seen[e["id"]] = f"{d['dimension']}:{d['from'] or ''}>{d['to']}"
    return Counter(seen.values())


def _http(worker: Worker, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}{path}",
                                 headers={"Authorization": "Bearer tok"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return orjson.loads(body) if path != "/metrics" else body.decode()


def test_projection_equals_replay_and_rebuild(tmp_path: Path, kafka_bootstrap: str,
                                              redis_url: str) -> None:
    lines = list(generate(SimConfig(clients=250, days=60, seed=21)))
    expected = replay(lines, RULES, AS_OF)
    worker = _worker(tmp_path, kafka_bootstrap, redis_url)
    settings = worker.settings
    produce_lines(settings, lines)
    worker.start()
    try:
        events = wait_for_changes(settings, len(expected["events"]))
        got = wait_projection(settings, expected["segments"])
        assert got == expected["segments"]
        # each distinct change counted exactly once in the per-day transition counters
        assert asyncio.run(_transitions(settings)) == _event_counts(events)
        cid = next(iter(expected["segments"]))[0]
        body = _http(worker, f"/clients/{cid}")
        assert {d: s["segment"] for d, s in body["segments"].items()} == \
            {d: s for (c, d), s in expected["segments"].items() if c == cid}
        assert "lifetime_value" in body["metrics"]  # enriched from the clients table
        sizes = _http(worker, "/segments")["dimensions"]["boostfeel"]["segments"]
        assert sizes == dict(Counter(s for (_, d), s in expected["segments"].items()
                                     if d == "boostfeel"))
        # rebuild from Kafka into a new generation; the running worker serves it
        stats = asyncio.run(rebuild(settings, build_engine(settings), say=lambda _: None,
                                    settle=1.5))
        assert stats["generation"] == 1
        assert stats["clients"] >= len({c for c, _ in expected["segments"]})
        assert asyncio.run(_projected(settings, {c for c, _ in expected["segments"]})) == \
            expected["segments"]
        assert asyncio.run(_transitions(settings)) == _event_counts(events)
        time.sleep(1.2)  # readers re-read the generation within a second
        assert _http(worker, "/segments")["dimensions"]["boostfeel"]["segments"] == sizes
        assert _http(worker, f"/clients/{cid}")["segments"] == body["segments"]
    finally:
        worker.stop()
        asyncio.run(_drop(settings))


async def _drop(settings: Settings) -> None:
    """Remove this test's keys from the shared Redis."""
    proj = Projection.from_url(settings.redis_url, namespace(settings.app_id))
    try:
        await drop_generation(proj.redis, proj.ns + ":")
    finally:
        await proj.close()


class RedisServer:
    """A private redis-server for the outage test (never the shared one)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ok = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                text=True).stdout.strip() == "PONG"
            if ok:
                return
            time.sleep(0.1)
        raise TimeoutError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_outage_then_catch_up(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    lines = list(generate(SimConfig(clients=200, days=60, seed=8)))
    expected = replay(lines, RULES, AS_OF)
    ids = sorted({c for c, _ in expected["segments"]})
    first = set(ids[: len(ids) // 2])

    def of(clients: set[str]) -> list[bytes]:
        return [ln for ln in lines if (client_key(ln) or b"").decode() in clients]

    server = RedisServer(tmp_path / "redis")
    server.start()
    worker = _worker(tmp_path, kafka_bootstrap, server.url)
    settings = worker.settings
    try:
        produce_lines(settings, of(first | {""}))
        worker.start()
        part = {k: v for k, v in expected["segments"].items() if k[0] in first}
        assert wait_projection(settings, part) == part
        deadline = time.monotonic() + 25  # the snapshot timer runs every 10 s
        while not (snapshot_days := asyncio.run(_snapshot_days(settings))):
            assert time.monotonic() < deadline, "the snapshot timer wrote no daily snapshot"
            time.sleep(1.0)
        assert snapshot_days == ["2026-06-15"]  # the service clock's day

        server.stop()  # Redis goes away; the pipeline must go on
        produce_lines(settings, of(set(ids) - first))
        events = wait_for_changes(settings, len(expected["events"]), timeout=120, settle=1.0)
        diff = change_diff(events, expected["events"])
        assert not diff, diff
        errors = re.search(r"^loyalty_projection_errors_total ([0-9.e+]+)$",
                           _http(worker, "/metrics"), re.M)
        assert errors is not None and float(errors.group(1)) > 0
        assert _status(worker, "/clients/" + ids[0]) == 503
        assert "redis" in _wait_ready(worker, False)["problems"]  # /ready tells why

        server.start()  # back, with its data (append-only file): the projection catches up
        assert wait_projection(settings, expected["segments"]) == expected["segments"]
        assert asyncio.run(_transitions(settings)) == _event_counts(events)
        assert set(snapshot_days) <= set(asyncio.run(_snapshot_days(settings)))
        _wait_ready(worker, True)
        deadline = time.monotonic() + 10  # the lag gauge goes back to 0 once caught up
        while worker.metric("loyalty_projection_lag_seconds") != 0:
            assert time.monotonic() < deadline, "loyalty_projection_lag_seconds stayed up after catching up"
            time.sleep(0.5)
    finally:
        worker.stop()
        server.stop()


async def _snapshot_days(settings: Settings) -> list[str]:
    proj = Projection.from_url(settings.redis_url, namespace(settings.app_id))
    try:
        return [d for d, _ in await proj.snapshots("boostfeel", "2000-01-01", "2100-01-01")]
    finally:
        await proj.close()


def _wait_ready(worker: Worker, ready: bool, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /ready until it says ``ready``; its last body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            body = _http(worker, "/ready")
        except urllib.error.HTTPError as exc:
            body = orjson.loads(exc.read())
        if body["ready"] is ready:
            return dict(body)
        assert time.monotonic() < deadline, f"/ready stayed {body}"
        time.sleep(1.0)


def _status(worker: Worker, path: str) -> int:
    try:
        _http(worker, path)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200
