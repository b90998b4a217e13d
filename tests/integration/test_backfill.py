"""Loading history through the pipeline, against the real local broker (issue: lossless
history). A backfill produced into a worker that is already running live must give what
``loyalty replay`` gives: time-based changes follow the inputs' event-time watermark
(agents.watermark), not "the consumer has caught up"."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset
from rules.record.state import is_archive_key
from rules.record.state import loads as load_state
from tests.integration.harness import (
    ROOT,
    Worker,
    change_diff,
    final_segments,
    produce_lines,
    replay,
    unique_env,
    wait_for_changes,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]
LATE = str(3 * 86_400)  # the simulator sends a late receipt up to 3 days after its place


def _worker(tmp_path: Path, bootstrap: str, name: str = "w", **env: str) -> Worker:
    e = unique_env(bootstrap, tmp_path / name, LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF)
    e.update(env)
    return Worker(e, tmp_path / f"{name}.log")


def test_a_backfill_at_a_limited_rate_into_a_running_worker_gives_replays_changes(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """The worker runs live (its clock after the history) before the history arrives, at
    100 receipts/s: slower than the worker, so it is caught up most of the time. Before the
    watermark, ticks fired whenever it had caught up: on this very history (3,449 lines),
    4,482 distinct change ids where replay has 3,219, 1,382 of replay's missing (measured
    with the code of 7490ed8); now exactly replay's."""
    lines = list(generate(SimConfig(clients=200, days=120, seed=21)))
    expected = replay(lines, RULES, AS_OF)  # the order produced: what the stream sees
    worker = _worker(tmp_path, kafka_bootstrap, LOYALTY_ALLOWED_LATENESS=LATE)
    settings = worker.settings
    produce_lines(settings, [])  # the topics
    worker.start()
    try:
        produce_lines(settings, lines, rate=100)
        events = wait_for_changes(settings, len(expected["events"]), timeout=180)
    finally:
        worker.stop()
    diff = change_diff(events, expected["events"])
    assert not diff, diff
    assert final_segments(events) == expected["segments"]


def _final_metrics(data_dir: Path, engine: Engine) -> dict[str, Any]:
    """Client id -> (segments, metrics at AS_OF) from a stopped worker's clients table."""
    from rocksdict import AccessType, Rdict

    from app.wire import codecs
    from rules.calendar import to_epoch

    at = to_epoch(__import__("datetime").datetime.fromisoformat(AS_OF))
    out: dict[str, Any] = {}
    for path in sorted(p for p in data_dir.rglob("*clients*.db") if p.is_dir()):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if key.startswith(b"__faust") or is_archive_key(key):
                    continue
                state = load_state(codecs.split_table_value(value)[1])
                out[key.decode()] = (engine.segments(state), engine.metrics(state, at))
        finally:
            db.close()
    return out


def _replay_metrics(lines: list[bytes], engine: Engine) -> dict[str, Any]:
    from datetime import datetime

    from app.batch.replay import Replay, time_order
    from rules.calendar import to_epoch

    rp = Replay(engine, datetime.fromisoformat(AS_OF), lambda e: None, lambda r: None)
    time_order(rp, [("receipts", enumerate(lines, 1))], 1 << 26)
    rp.finish()
    at = to_epoch(datetime.fromisoformat(AS_OF))
    return {cid: (engine.segments(s), engine.metrics(s, at)) for cid, s in rp.states.items()}


def test_a_shuffled_backfill_and_loyalty_produce_end_with_replays_metrics(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    """The same history twice: shuffled (every client's receipts in random order, produced
    before the worker starts), and shuffled in a file sent by ``loyalty produce`` (which
    sends it in event-time order) into a running worker. Both end with the metrics and
    segments of ``loyalty replay`` (event-time order) for every client."""
    lines = [ln for ln in generate(SimConfig(clients=120, days=150, seed=23, malformed_rate=0.0))]
    random.Random(5).shuffle(lines)
    engine = Engine([load_ruleset(r) for r in RULES])
    expected = _replay_metrics(lines, engine)

    shuffled = _worker(tmp_path, kafka_bootstrap, "shuffled")
    produce_lines(shuffled.settings, lines)
    shuffled.start()
    try:
        wait_for_changes(shuffled.settings, 1, settle=8.0)
        _wait_until_processed(shuffled, len(lines))
    finally:
        shuffled.stop()
    assert _final_metrics(tmp_path / "shuffled", engine) == expected

    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    produced = _worker(tmp_path, kafka_bootstrap, "produced")
    produce_lines(produced.settings, [])
    produced.start()
    try:
        env = {**os.environ, **produced.env}
        out = subprocess.run([sys.executable, "-m", "app", "produce", str(path), "--rate", "1500"],
                             env=env, cwd=ROOT, capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()
        assert orjson.loads(out.stderr.splitlines()[-1])["messages"] == len(lines)
        _wait_until_processed(produced, len(lines))
    finally:
        produced.stop()
    assert _final_metrics(tmp_path / "produced", engine) == expected


def _wait_until_processed(worker: Worker, receipts: int, timeout: float = 120.0) -> None:
    """Until the worker has handled ``receipts`` receipts and its due backlog is empty."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        handled = sum(worker.metric(f'loyalty_receipts_total{{outcome="{o}"}}')
                      for o in ("applied", "duplicate", "anonymous"))
        rejected = worker.metric("loyalty_receipts_rejected_total")
        if handled + rejected >= receipts and worker.metric("loyalty_due_backlog") == 0:
            time.sleep(4.0)  # the last ticks' writes
            return
        time.sleep(1.0)
    raise AssertionError(f"the worker did not handle {receipts} receipts in {timeout} s")
