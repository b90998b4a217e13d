"""Production shape, for real (local Kafka and Redis, no mocks): two workers give one answer,
the served figures follow every receipt, and a pipeline runs through SASL_SSL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from app.settings import Settings
from app.wire.kafka_io import read_to_end
from rules import Engine, load_ruleset
from tests.integration.harness import (
    ROOT,
    Worker,
    change_diff,
    free_port,
    produce_lines,
    replay,
    unique_env,
    wait_for_changes,
)
from tests.integration.test_projection import wait_projection

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]
TOKEN = "tok"
TLS = ROOT / ".local" / "kafka" / "tls" / "ca.pem"
SASL_PORT = os.environ.get("KAFKA_SASL_PORT", "9094")


def _call(worker: Worker, path: str, body: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}{path}", data=body,
                                 headers={"Authorization": f"Bearer {TOKEN}"},
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, (raw.decode() if path == "/metrics" else orjson.loads(raw))


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1.0)
    raise AssertionError(f"{what}: not within {timeout} s (last: {str(last)[:500]})")


def _sizes_gauge(text: str, dim: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("loyalty_segment_clients{") and f'dimension="{dim}"' in line:
            seg = line.split('segment="', 1)[1].split('"', 1)[0]
            out[seg] += int(float(line.rsplit(" ", 1)[1]))
    return +out


def test_two_workers_give_one_answer(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    lines = list(generate(SimConfig(clients=200, days=60, seed=31)))
    expected = replay(lines, RULES, AS_OF)
    env = unique_env(kafka_bootstrap, tmp_path / "a", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                     REDIS_URL=redis_url, LOYALTY_API_TOKEN=TOKEN)
    workers = [Worker(env, tmp_path / "a.log"),
               Worker({**env, "LOYALTY_DATA_DIR": str(tmp_path / "b"), "LOYALTY_WEB_PORT": str(free_port())},
                      tmp_path / "b.log")]
    settings = workers[0].settings
    produce_lines(settings, lines)
    try:
        for w in workers:
            w.start()
        events = wait_for_changes(settings, len(expected["events"]), timeout=240)
        assert change_diff(events, expected["events"]) == ""
        assert wait_projection(settings, expected["segments"]) == expected["segments"]
        rules = (ROOT / "rules" / "presets" / "rfm.yaml").read_text().replace("2000", "1500").encode()

        def preview(w: Worker) -> Any:
            status, body = _call(w, "/rules/preview", rules)
            return body if status == 200 else None

        first = _until(lambda: preview(workers[0]), 90, "a cluster-wide preview")
        assert first["scope"] == "cluster" and first["workers"] == 2 and first["partitions"] == [0, 1, 2, 3]
        assert first["clients"] == len({c for c, _ in expected["segments"]})
        parts = [_call(w, "/rules/preview?scope=worker", rules)[1] for w in workers]
        assert sorted(p for part in parts for p in part["partitions"]) == [0, 1, 2, 3]
        assert sum(part["clients"] for part in parts) == first["clients"]
        assert all(0 < part["clients"] < first["clients"] for part in parts)  # each holds a share
        cid = sorted({c for c, _ in expected["segments"]})[0]
        vip = next(s for (_, d), s in sorted(expected["segments"].items()) if d == "boostfeel")
        paths = ["/segments", f"/segments/boostfeel/{vip}/members?limit=1000", "/reports/transitions?dimension=rfm",
                 "/reports/sizes?dimension=boostfeel", "/reports/revenue?dimension=rfm",
                 "/reports/scenarios", f"/clients/{cid}"]
        for path in paths:
            answers = [_call(w, path) for w in workers]
            assert answers[0][0] == 200, (path, answers[0])
            assert answers[0] == answers[1], path
        assert preview(workers[1]) == first
        true_sizes = Counter(s for (_, d), s in expected["segments"].items() if d == "boostfeel")

        def summed() -> Any:
            total: Counter[str] = Counter()
            for w in workers:
                total += _sizes_gauge(_call(w, "/metrics")[1], "boostfeel")
            return total == true_sizes

        assert _until(summed, 60, "Prometheus sums equal to the true sizes") is True
    finally:
        for w in workers:
            w.stop()


def _no_change_receipt(lines: list[bytes], expected: dict[str, Any]) -> tuple[str, bytes]:
    """A receipt of a client at the service's clock (AS_OF: a receipt dated earlier could be
    late against the ticks already applied, with other changes than replay's), which makes
    replay publish no change (found by replaying the history with it)."""
    last: dict[str, bytes] = {}
    for line in lines:
        try:
            doc = orjson.loads(line)
            if doc.get("type") == "sale" and isinstance(doc.get("client_id"), str):
                last[doc["client_id"]] = line
        except (orjson.JSONDecodeError, AttributeError):
            continue  # the simulator's malformed lines
    for cid in sorted(last):
        doc = orjson.loads(last[cid])
        extra = orjson.dumps({**doc, "receipt_id": f"extra-{cid}", "occurred_at": AS_OF})
        if len(replay([*lines, extra], RULES, AS_OF)["events"]) == len(expected["events"]):
            return cid, extra
    raise AssertionError("no receipt without a change found")


def _metrics(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    engine = Engine([load_ruleset(r) for r in RULES])
    rp = Replay(engine, datetime.fromisoformat(AS_OF), lambda _: None, lambda _: None)
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    return {row["client_id"]: row["metrics"] for row in rp.finish()}


def test_receipts_that_change_no_segment_update_the_served_figures(
        tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    lines = list(generate(SimConfig(clients=60, days=60, seed=32)))
    expected = replay(lines, RULES, AS_OF)
    cid, extra = _no_change_receipt(lines, expected)
    after = _metrics([*lines, extra])
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                     REDIS_URL=redis_url, LOYALTY_API_TOKEN=TOKEN)
    worker = Worker(env, tmp_path / "w.log")
    settings = worker.settings
    produce_lines(settings, lines)
    lookup_port = free_port()
    lookup = subprocess.Popen([sys.executable, "-m", "app", "lookup", "--port", str(lookup_port)],
                              env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def pos(path: str) -> Any:  # the POS lookup server (its in-memory cache included)
        req = urllib.request.Request(f"http://127.0.0.1:{lookup_port}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return orjson.loads(resp.read())
        except (OSError, urllib.error.HTTPError):
            return None

    try:
        worker.start()
        wait_for_changes(settings, len(expected["events"]))
        wait_projection(settings, expected["segments"])
        before = _call(worker, f"/clients/{cid}")[1]["metrics"]
        assert Decimal(str(before["lifetime_value"])) != Decimal(str(after[cid]["lifetime_value"]))
        assert _until(lambda: pos(f"/clients/{cid}"), 30, "the lookup server")["metrics"] == before  # cached
        produce_lines(settings, [extra])

        def served() -> Any:
            m = _call(worker, f"/clients/{cid}")[1]["metrics"]
            at_pos = (pos(f"/clients/{cid}") or {}).get("metrics", {})
            return all(x.get("lifetime_value") == after[cid]["lifetime_value"]
                       and x.get("lifetime_visits") == after[cid]["lifetime_visits"] for x in (m, at_pos))

        _until(served, 30, "the API's and the POS lookup's lifetime value after a receipt that changed no segment")
        events = asyncio.run(read_to_end(settings, settings.topic_changes))
        assert len({orjson.loads(e.value)["id"] for e in events}) == len(expected["events"])  # no change
        revenue = _call(worker, "/reports/revenue?dimension=rfm")[1]["periods"][0]["segments"]
        want: dict[str, Decimal] = {}
        for (client, dim), seg in expected["segments"].items():
            if dim == "rfm":
                want[seg] = want.get(seg, Decimal(0)) + Decimal(str(after[client]["lifetime_value"]))
        got = {s: Decimal(str(row["revenue"])) for s, row in revenue.items()}
        assert got == want
    finally:
        lookup.terminate()
        lookup.wait(10)
        worker.stop()


def _sasl_env(bootstrap: str, data: Path, password: str = "loyalty-secret") -> dict[str, str]:
    return unique_env(f"127.0.0.1:{SASL_PORT}", data, LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                      KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SSL_CAFILE=str(TLS),
                      KAFKA_SASL_MECHANISM="SCRAM-SHA-512", KAFKA_SASL_USERNAME="loyalty",
                      KAFKA_SASL_PASSWORD=password, LOYALTY_SCENARIOS="none")


def test_a_pipeline_through_sasl_ssl_equals_replay(tmp_path: Path, kafka_bootstrap: str,
                                                   redis_url: str) -> None:
    assert TLS.exists(), "deploy/local/kafka.sh start makes the SASL_SSL listener and its CA"
    lines = list(generate(SimConfig(clients=80, days=60, seed=33)))
    expected = replay(lines, RULES, AS_OF)
    worker = Worker({**_sasl_env(kafka_bootstrap, tmp_path / "w"), "REDIS_URL": redis_url}, tmp_path / "w.log")
    settings = worker.settings
    assert settings.kafka_security_protocol == "SASL_SSL"
    produce_lines(settings, lines)  # the CLI's producer, through SASL_SSL too
    try:
        worker.start()
        events = wait_for_changes(settings, len(expected["events"]))
        assert change_diff(events, expected["events"]) == ""
        assert wait_projection(settings, expected["segments"]) == expected["segments"]
    finally:
        worker.stop()


def test_wrong_credentials_fail_fast_with_one_line(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = {**os.environ, **_sasl_env(kafka_bootstrap, tmp_path / "w", password="not-the-password"),
           "LOYALTY_CONNECT_TIMEOUT": "60"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "app", "worker"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: Kafka at 127.0.0.1:") and "invalid credentials" in lines[0]
    assert "not-the-password" not in done.stderr
    assert took < 20, took  # not the 60 s connect timeout: credentials are not retried


def test_tail_shows_dlq_reasons_from_the_headers(tmp_path: Path, kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    from app.wire.kafka_io import ensure_topics

    env = unique_env(kafka_bootstrap, tmp_path / "w")
    settings = Settings.from_env(env)

    async def put() -> None:
        await ensure_topics(settings)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic_dlq, b'{"receipt_id": "r-1"}', key=b"c-1", headers=[
                ("reason", b"missing_field"), ("field", b"client_id"), ("source-topic", b"pos.receipts")])
        finally:
            await producer.stop()

    asyncio.run(put())
    done = subprocess.run([sys.executable, "-m", "app", "tail", "--dlq", "--idle", "3", "--max", "1"],
                          env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    row = orjson.loads(done.stdout.splitlines()[0])
    assert row["headers"] == {"reason": "missing_field", "field": "client_id", "source-topic": "pos.receipts"}
    assert row["value"] == '{"receipt_id": "r-1"}' and row["offset"] == 0
