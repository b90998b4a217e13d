"""Fail safe against the real broker: hostile input and a full disk lose nothing, stop no
partition and end with exactly replay's change ids (agents.failsafe)."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.simulate import SimConfig, generate
from app.wire.codecs import DLQ_KEEP
from tests.integration.harness import (
    Worker,
    change_diff,
    final_segments,
    produce_lines,
    read_topic,
    replay,
    unique_env,
    wait_for_changes,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]


def _worker(tmp_path: Path, bootstrap: str, data: Path | None = None, **env: str) -> Worker:
    e = unique_env(bootstrap, data or tmp_path / "w", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF, **env)
    return Worker(e, tmp_path / "w.log")


def _hostile() -> list[bytes]:
    base = {"client_id": "c-hostile", "occurred_at": "2026-06-01T10:00:00+00:00", "type": "sale"}
    return [
        orjson.dumps({**base, "receipt_id": "h-big", "total": "1.00",  # 1,000,228 bytes: the broker takes it
                      "items": [{"category": "x", "amount": "1.00", "sku": "s" * 1_000_000}]}),
        orjson.dumps({**base, "receipt_id": "h-huge", "total": "92233720368547758.08"}),
        orjson.dumps({**base, "receipt_id": "h-1", "total": "10000000000.00"}),
        orjson.dumps({**base, "receipt_id": "h-2", "total": "10000000000.00"}),
        orjson.dumps({**base, "receipt_id": "h-1", "total": "5.00"}),  # the id reused
    ]


def _dlq_reasons(worker: Worker) -> collections.Counter[str]:
    return collections.Counter(dict(r.headers)["reason"].decode()
                               for r in read_topic(worker.settings, worker.settings.topic_dlq))


def test_hostile_input_is_rejected_with_reasons_and_nothing_stops(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=150, days=60, seed=5)))
    lines = lines[:200] + _hostile() + lines[200:]
    expected = replay(lines, RULES, AS_OF)
    assert collections.Counter(r["reason"] for r in expected["rejects"])["message_too_large"] == 1
    worker = _worker(tmp_path, kafka_bootstrap)
    produce_lines(worker.settings, lines)
    worker.start()
    try:
        events = wait_for_changes(worker.settings, len(expected["events"]))
        crashed = "crashed" in worker.log.read_text().lower()
    finally:
        worker.stop()
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]
    assert _dlq_reasons(worker) == collections.Counter(r["reason"] for r in expected["rejects"])
    big = [r for r in read_topic(worker.settings, worker.settings.topic_dlq)
           if dict(r.headers)["reason"] == b"message_too_large"]
    assert len(big) == 1 and len(big[0].value) == DLQ_KEEP
    assert int(dict(big[0].headers)["original-size"]) == len(_hostile()[0])
    assert not crashed


@contextlib.contextmanager
def _tmpfs(path: Path, size_mb: int) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs one")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> Path:
    """Fill the file system of ``path`` to the last byte; returns the filler file."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def _ready(worker: Worker) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}/ready"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_consumption_and_resumes_exactly(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=300, days=90, seed=9)))
    expected = replay(lines, RULES, AS_OF)
    data = tmp_path / "data"
    with _tmpfs(data, 64):
        worker = _worker(tmp_path, kafka_bootstrap, data / "w", LOYALTY_BATCH_MAX="50")
        first, rest = lines[: len(lines) // 4], lines[len(lines) // 4:]
        produce_lines(worker.settings, first)
        worker.start()
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not read_topic(worker.settings, worker.settings.topic_changes):
                time.sleep(0.5)
            filler = _fill(data)
            produce_lines(worker.settings, rest)
            blocked: dict[str, Any] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not blocked:
                status, body = _ready(worker)
                blocked = body.get("blocked", {}) if status == 503 else {}
                time.sleep(1)
            assert blocked, f"never reported not ready on a full disk: {body}"
            assert worker.proc is not None and worker.proc.poll() is None  # no crash
            time.sleep(5)
            filler.unlink()
            events = wait_for_changes(worker.settings, len(expected["events"]), timeout=180)
            status, body = _ready(worker)
        finally:
            worker.stop()
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]
    assert status == 200, body
    duplicates = len(events) - len({e["id"] for e in events})
    print(f"full disk: blocked by {blocked}; {len(events)} records for {len(expected['events'])} ids "
          f"({duplicates} duplicates)")
    assert duplicates <= len(expected["events"]) // 10, "a duplicate storm"


def _published(worker: Worker) -> int:
    """Records in the changes topic (the sum of its end offsets; cheap)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def count() -> int:
        s = worker.settings
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(s.topic_changes) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(s.topic_changes) or set()
            ends = await consumer.end_offsets([TopicPartition(s.topic_changes, p) for p in parts])
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(count())


def test_sigkill_soak_five_kills_during_a_backlog_end_exactly(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Five SIGKILLs at random moments while a backlog drains; after the last restart the
    worker publishes exactly replay's change ids and no partition is left behind."""
    import random

    lines = list(generate(SimConfig(clients=1500, days=90, seed=21)))
    expected = replay(lines, RULES, AS_OF)
    worker = _worker(tmp_path, kafka_bootstrap, LOYALTY_STALL_TIMEOUT="20")
    produce_lines(worker.settings, lines)
    rng = random.Random(int(os.environ.get("LOYALTY_SOAK_SEED", "7")))
    kills = []
    try:
        for _ in range(5):
            before = _published(worker)
            worker.start()
            deadline = time.monotonic() + 90
            while _published(worker) <= before + 200 and time.monotonic() < deadline:
                time.sleep(0.2)  # until this run makes progress: a kill mid-backlog, not mid-start-up
            time.sleep(rng.uniform(0.0, 3.0))
            worker.kill()
            kills.append(_published(worker))
        worker.start()
        started = time.monotonic()
        events = wait_for_changes(worker.settings, len(expected["events"]), timeout=300)
        took = time.monotonic() - started
        status, body = _ready(worker)
        gaps = worker.metric("loyalty_offset_gaps_total")
    finally:
        worker.stop()
    distinct = len({e["id"] for e in events})
    print(f"soak: {len(lines)} receipts, changes published at the kills {kills}; after the last start "
          f"{distinct} of {len(expected['events'])} ids in {took:.0f} s, {len(events) - distinct} duplicates, "
          f"{gaps:.0f} skipped records re-fetched, ready {status}")
    assert kills[-1] < len(expected["events"]), "the backlog was drained before the last kill"
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]
    assert status == 200, body


@pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
                    reason="stops the broker: only the project's own local broker (deploy/local/kafka.sh)")
def test_a_broker_outage_mid_stream_loses_nothing(tmp_path: Path, kafka_bootstrap: str) -> None:
    from tests.conftest import ROOT

    script = str(ROOT / "deploy" / "local" / "kafka.sh")
    lines = list(generate(SimConfig(clients=300, days=90, seed=13)))
    expected = replay(lines, RULES, AS_OF)
    worker = _worker(tmp_path, kafka_bootstrap)
    produce_lines(worker.settings, lines)
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while _published(worker) < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        lines_before = len(worker.log.read_text().splitlines())
        subprocess.run([script, "stop"], check=True, capture_output=True, timeout=180)
        try:
            problems: dict[str, Any] = {}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and "kafka" not in problems:
                status, body = _ready(worker)
                problems = body.get("problems", {})
                time.sleep(1)
            time.sleep(max(0.0, deadline - time.monotonic() - 10))
        finally:
            subprocess.run([script, "start"], check=True, capture_output=True, timeout=600)
        log_lines = len(worker.log.read_text().splitlines()) - lines_before
        assert "kafka" in problems, f"/ready never named the broker: {body}"
        events = wait_for_changes(worker.settings, len(expected["events"]), timeout=240)
        deadline = time.monotonic() + 60
        while (status := _ready(worker)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        worker.stop()
    print(f"broker outage: {log_lines} log lines during the outage; {len(events)} records for "
          f"{len(expected['events'])} ids")
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]
    assert status == 200
    assert log_lines < 200, "a log flood during the outage"


def test_personal_fields_reach_no_topic_and_no_log_even_at_debug(tmp_path: Path, kafka_bootstrap: str) -> None:
    secret = "Tatyana-Sentinel-79001234567"
    cfg = SimConfig(clients=40, days=30, seed=3)
    receipts = list(generate(cfg))
    profiles = [orjson.dumps({"client_id": f"c-{n:07d}", "gender": "f", "name": secret, "phone": secret,
                              "email": f"{secret}@example.org"}) for n in range(1, 11)]
    profiles.append(orjson.dumps({"client_id": "c-0000001", "gender": "?", "name": secret}))  # rejected
    worker = _worker(tmp_path, kafka_bootstrap, LOYALTY_LOG_LEVEL="debug")
    s = worker.settings
    produce_lines(s, receipts)
    produce_lines(s, profiles, topic=s.topic_profiles)
    expected = replay(receipts, RULES, AS_OF)
    worker.start()
    try:
        wait_for_changes(s, len(expected["events"]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not read_topic(s, s.topic_dlq):
            time.sleep(1)
    finally:
        worker.stop()
    for topic in (s.topic_client_events, s.topic_dlq, s.topic_changes, f"{s.app_id}-clients-changelog"):
        records = read_topic(s, topic)
        assert records or topic == s.topic_changes, topic
        assert not any(secret.encode() in (r.value or b"") for r in records), topic
    assert any(dict(r.headers)["reason"] == b"bad_value" for r in read_topic(s, s.topic_dlq))
    log = worker.log.read_text()
    assert "DEBUG" in log and secret not in log
