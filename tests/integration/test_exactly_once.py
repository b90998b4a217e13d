"""LOYALTY_GUARANTEE=exactly_once on the real broker: Faust's transactional producer.

Consumers of the output read with isolation level read_committed (``app.kafka_io.tail``
does), so they see each committed change once; a SIGKILL aborts the open transaction.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import orjson
import pytest

from app.simulate import SimConfig, generate
from tests.integration.harness import Worker, final_segments, produce_lines, read_topic, replay, unique_env

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
RULES = ["boostfeel", "rfm"]


def _changes(worker: Worker) -> list[dict[str, object]]:
    s = worker.settings
    return [orjson.loads(r.value) for r in read_topic(s, s.topic_changes, idle=1.0)]


def _wait(worker: Worker, expected: int, timeout: float) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    events = _changes(worker)
    while len(events) < expected and time.monotonic() < deadline:
        time.sleep(2.0)
        events = _changes(worker)
    time.sleep(3.0)
    return _changes(worker)


def test_exactly_once_equals_replay_without_duplicates_after_sigkill(tmp_path: Path,
                                                                   kafka_bootstrap: str) -> None:
    lines = list(generate(SimConfig(clients=600, days=60, seed=21)))
    expected = replay(lines, RULES, AS_OF)
    env = unique_env(kafka_bootstrap, tmp_path / "eos", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                     LOYALTY_GUARANTEE="exactly_once", LOYALTY_SCENARIOS="none")
    worker = Worker(env, tmp_path / "eos.log")
    produce_lines(worker.settings, lines)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        seen = 0
        while time.monotonic() < deadline and seen < len(expected["events"]) // 4:
            seen = len(_changes(worker))
        worker.kill()
        assert seen < len(expected["events"]), "the worker finished before it could be killed"
        worker.start()
        events = _wait(worker, len(expected["events"]), timeout=240)
    finally:
        worker.stop()
    ids = collections.Counter(e["id"] for e in events)
    assert set(ids) == {e["id"] for e in expected["events"]}
    assert max(ids.values()) == 1, "a committed change was published twice"
    assert final_segments(events) == expected["segments"]  # type: ignore[arg-type]
