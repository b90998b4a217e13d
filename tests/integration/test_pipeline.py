"""The streaming pipeline against the real local Kafka broker (no mocks)."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest

from app.batch.simulate import SimConfig, generate
from tests.integration.harness import (
    Worker,
    change_diff,
    final_segments,
    free_port,
    produce_lines,
    read_topic,
    replay,
    unique_env,
    wait_for_changes,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm", "netix"]


def _worker(tmp_path: Path, bootstrap: str, name: str = "w", **env: str) -> Worker:
    e = unique_env(bootstrap, tmp_path / name, LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF)
    e.update(env)
    return Worker(e, tmp_path / f"{name}.log")


def _run_through(worker: Worker, lines: list[bytes], changes: int) -> None:
    """Produce ``lines``, run ``worker`` until ``changes`` distinct changes are out, stop it."""
    produce_lines(worker.settings, lines)
    worker.start()
    try:
        wait_for_changes(worker.settings, changes)
    finally:
        worker.stop()


def _wait_for_first_change(settings: Any, timeout: float = 90) -> None:
    """Until the worker has published its first change (or ``timeout`` s): mid-stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _any_change(settings):
        time.sleep(0.2)


def _any_change(settings: Any) -> bool:
    """True once the first change is published (reads one record: a full read of a fast
    worker's output can last until the worker is done)."""
    from app.wire.kafka_io import tail

    async def one() -> bool:
        async for _ in tail(settings, settings.topic_changes, idle_timeout=0.5, max_messages=1):
            return True
        return False

    return asyncio.run(one())


def test_streaming_equals_replay_and_dlq(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=300, days=60, seed=11)))
    expected = replay(lines, RULES, AS_OF)
    worker = _worker(tmp_path, kafka_bootstrap)
    settings = worker.settings
    # all input is in the topic before the worker starts (see README: time-based changes
    # wait for the input watermark, so the result does not depend on consumption speed)
    produce_lines(settings, lines)
    worker.start()
    try:
        events = wait_for_changes(settings, len(expected["events"]))
    finally:
        worker.stop()
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]
    # every event is a CloudEvent keyed by the client
    sample = events[0]
    assert sample["specversion"] == "1.0" and sample["type"] == "loyalty.segment.changed"
    # bad input: in the DLQ with machine-readable reasons, none lost
    dlq = read_topic(settings, settings.topic_dlq)
    reasons = collections.Counter(dict(r.headers)["reason"].decode() for r in dlq)
    assert reasons == collections.Counter(r["reason"] for r in expected["rejects"])
    assert sum(reasons.values()) > 0
    headers = dict(dlq[0].headers)
    assert headers["source-topic"].decode() == settings.topic_receipts
    assert int(headers["source-offset"]) >= 0


def test_restart_after_sigkill_recovers_state(tmp_path: Path, kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=1500, days=90, seed=5)))
    expected = replay(lines, RULES, AS_OF)
    worker = _worker(tmp_path, kafka_bootstrap)
    settings = worker.settings
    produce_lines(settings, lines)
    worker.start()
    try:
        _wait_for_first_change(settings)
        worker.kill()  # SIGKILL mid-stream: no clean shutdown, no final commit
        seen = len(read_topic(settings, settings.topic_changes))
        assert seen < len(expected["events"]), "the worker finished before it could be killed"
        worker.start()
        events = wait_for_changes(settings, len(expected["events"]), timeout=180)
        # records the consumer skipped and the agents re-fetched (agents.offsets)
        print("offset gaps repaired:", worker.metric("loyalty_offset_gaps_total"))
    finally:
        worker.stop()
    # at-least-once: redelivered work may publish an event twice, with the same id
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]


def test_a_second_worker_joining_mid_stream_equals_replay(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Scale out mid-stream: a second worker of the same app joins, the partitions are
    rebalanced, the one that takes a partition over rebuilds its table from the changelog
    the first worker wrote, and together they publish what replay computes."""
    lines = list(generate(SimConfig(clients=1500, days=90, seed=17)))
    expected = replay(lines, RULES, AS_OF)
    first = _worker(tmp_path, kafka_bootstrap, "first")
    settings = first.settings
    second = Worker({**first.env, "LOYALTY_DATA_DIR": str(tmp_path / "second"),
                     "LOYALTY_WEB_PORT": str(free_port())}, tmp_path / "second.log")
    produce_lines(settings, lines)
    first.start()
    try:
        _wait_for_first_change(settings)
        second.start()
        seen = len(read_topic(settings, settings.topic_changes))
        assert seen < len(expected["events"]), "the first worker finished before the second joined"
        events = wait_for_changes(settings, len(expected["events"]), timeout=180)
        assert second.metric('loyalty_receipts_total{outcome="applied"}') > 0, "the second worker got no partition"
    finally:
        second.stop()
        first.stop()
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]


def test_a_rules_change_sweeps_the_stored_clients(tmp_path: Path, kafka_bootstrap: str) -> None:
    """The business lowers at_risk to 10 days and the loyal bar to 6 visits and restarts
    the worker: every stored client is re-evaluated under the new rules (cause ``rules``)
    with no receipt of its own, and ends in the segments replay gives with the new rules."""
    import orjson

    lines = list(generate(SimConfig(clients=300, days=60, seed=21)))
    preset = Path(__file__).resolve().parents[2] / "rules/presets/boostfeel.yaml"
    changed = tmp_path / "boostfeel.yaml"
    text = preset.read_text().replace("at_risk_days: 20", "at_risk_days: 10")
    changed.write_text(text.replace("loyal_visits: 10", "loyal_visits: 6"))
    before = replay(lines, ["boostfeel", "rfm"], AS_OF)
    after = replay(lines, [str(changed), "rfm"], AS_OF)
    assert after["segments"] != before["segments"]
    first = _worker(tmp_path, kafka_bootstrap, "w", LOYALTY_RULES="boostfeel,rfm")
    settings = first.settings
    _run_through(first, lines, len(before["events"]))
    events = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_changes)]
    assert final_segments(events) == before["segments"]
    second = Worker({**first.env, "LOYALTY_RULES": f"{changed},rfm"}, tmp_path / "w2.log")
    second.start()
    try:
        seen, still, deadline = len(events), 0, time.monotonic() + 120
        while time.monotonic() < deadline and still < 4:  # until the topic stops growing
            time.sleep(1.0)
            now = len(read_topic(settings, settings.topic_changes))
            still = still + 1 if now == seen else 0
            seen = now
    finally:
        second.stop()
    known = {e["id"] for e in events}  # (records of several partitions: not in append order)
    swept = [e for e in (orjson.loads(r.value) for r in read_topic(settings, settings.topic_changes))
             if e["id"] not in known]
    assert swept and {e["data"]["cause"] for e in swept} == {"rules"}
    assert {e["data"]["to"] for e in swept if e["data"]["dimension"] == "boostfeel"} >= {"at_risk"}
    assert final_segments(events + swept) == after["segments"]


def test_time_based_transition_fires_within_bound(tmp_path: Path, kafka_bootstrap: str) -> None:
    from datetime import UTC, datetime, timedelta

    import orjson

    worker = _worker(tmp_path, kafka_bootstrap, LOYALTY_CLOCK="wall", LOYALTY_RULES="boostfeel")
    settings = worker.settings
    worker.start()
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        bought = now - timedelta(days=20) + timedelta(seconds=8)
        receipt = {"receipt_id": "r-timer-1", "client_id": "c-timer", "type": "sale",
                   "occurred_at": bought.isoformat(), "total": "300.00"}
        produce_lines(settings, [orjson.dumps(receipt)])
        due = bought + timedelta(days=20)
        at_risk = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and at_risk is None:
            for r in read_topic(settings, settings.topic_changes):
                e = orjson.loads(r.value)
                if e["data"]["to"] == "at_risk":
                    at_risk = (e, datetime.now(UTC))
        assert at_risk is not None, "no at_risk event within 60 s"
        event, seen_at = at_risk
        assert event["time"] == due.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert event["data"]["cause"] == "time"
        lateness = (seen_at - due).total_seconds()
        assert lateness < settings.due_max_delay, lateness
    finally:
        worker.stop()


def _table_values(data_dir: Path) -> dict[bytes, bytes]:
    """Every key/value of the clients table's RocksDB databases under a stopped worker's dir."""
    from rocksdict import AccessType, Rdict

    found: dict[bytes, bytes] = {}
    dbs = sorted(p for p in data_dir.rglob("*clients*.db") if p.is_dir())
    assert dbs, f"no clients table under {data_dir}"
    for path in dbs:
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            found.update((k, v) for k, v in db.items() if not k.startswith(b"__faust"))
        finally:
            db.close()
    return found


def test_changelog_alone_restores_the_table(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A worker on a new machine (empty data dir) rebuilds the clients table from the
    changelog the first worker wrote (directly, see agents.batching.ClientTable): the same
    values byte for byte, and the receipts sent again are all recognized as duplicates."""
    lines = list(generate(SimConfig(clients=300, days=60, seed=13)))
    expected = replay(lines, RULES, AS_OF)
    first = _worker(tmp_path, kafka_bootstrap, "first")
    settings = first.settings
    _run_through(first, lines, len(expected["events"]))
    published = len(read_topic(settings, settings.topic_changes))
    written = _table_values(tmp_path / "first")
    archives = [k for k in written if k.startswith(b"\x00a")]  # rows left the records (rules.record.state)
    assert len(written) - len(archives) == len({c for c, _ in expected["segments"]})
    assert archives, "60 days of history: frequent clients' early rows are archived"

    second = Worker({**first.env, "LOYALTY_DATA_DIR": str(tmp_path / "second")}, tmp_path / "second.log")
    produce_lines(settings, lines)  # every receipt again (POS retries)
    second.start()
    try:
        seen, still, deadline = -1.0, 0, time.monotonic() + 120
        while time.monotonic() < deadline and still < 3:  # until the count stops growing
            time.sleep(1.0)
            now = second.metric("loyalty_receipts_total")
            still = still + 1 if now == seen and now > 0 else 0
            seen = now
        outcomes = {o: second.metric(f'loyalty_receipts_total{{outcome="{o}"}}')
                    for o in ("applied", "duplicate")}
    finally:
        second.stop()
    assert outcomes["applied"] == 0, outcomes
    assert outcomes["duplicate"] > 0, outcomes
    assert len(read_topic(settings, settings.topic_changes)) == published  # nothing new
    assert _table_values(tmp_path / "second") == written
