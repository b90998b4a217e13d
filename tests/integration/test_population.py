"""Population rounds on the real broker: two workers publish exactly replay's change events
(same ids, causes ``population`` included) with population rules loaded, also when a
worker is killed in the middle of the rounds and started again."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.order import DEFAULT_MEMORY
from app.batch.replay import Replay, time_order
from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset
from tests.integration.harness import (
    Worker,
    change_diff,
    free_port,
    produce_lines,
    read_topic,
    unique_env,
    wait_for_changes,
)

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"  # a Monday midnight: a weekly round
RULES = ["rfm_quantiles", "abc", "boostfeel", "churn_risk"]  # churn_risk: the fitted models
END = datetime(2026, 6, 14, 20, 0, tzinfo=UTC)


def _replay(lines: list[bytes]) -> dict[str, Any]:
    """``loyalty replay`` (order time) with the weekly cadence."""
    events: list[dict[str, Any]] = []
    engine = Engine([load_ruleset(r) for r in RULES])
    rp = Replay(engine, datetime.fromisoformat(AS_OF), events.append, lambda _: None, cadence="week")
    time_order(rp, [("receipts", enumerate(lines, 1))], DEFAULT_MEMORY)
    rp.finish()
    return {"events": events, "snapshots": rp.stats.snapshots, "last": engine.population}


def _workers(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> list[Worker]:
    env = unique_env(kafka_bootstrap, tmp_path / "a", LOYALTY_RULES=",".join(RULES), LOYALTY_CLOCK=AS_OF,
                     REDIS_URL=redis_url, LOYALTY_POPULATION_CADENCE="week",
                     LOYALTY_ALLOWED_LATENESS="3600",  # the simulator's receipts come up to 30 min late
                     LOYALTY_SCENARIOS="none")
    env["LOYALTY_TOPIC_POPULATION"] = env["LOYALTY_APP_ID"] + ".population"
    return [Worker(env, tmp_path / "a.log"),
            Worker({**env, "LOYALTY_DATA_DIR": str(tmp_path / "b"), "LOYALTY_WEB_PORT": str(free_port())},
                   tmp_path / "b.log")]


def _rounds(worker: Worker) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_topic(worker.settings, worker.settings.topic_population)
            if r.key.startswith(b"round:")]


@pytest.mark.parametrize("restart", [False, True], ids=["steady", "killed-mid-rounds"])
def test_two_workers_with_population_rules_equal_replay(tmp_path: Path, kafka_bootstrap: str,
                                                        redis_url: str, restart: bool) -> None:
    lines = list(generate(SimConfig(clients=150, days=45, seed=41, end=END)))
    expected = _replay(lines)
    causes = {e["data"]["cause"] for e in expected["events"]}
    assert "population" in causes and expected["snapshots"] >= 6
    workers = _workers(tmp_path, kafka_bootstrap, redis_url)
    settings = workers[0].settings
    produce_lines(settings, lines)
    try:
        for w in workers:
            w.start()
        if restart:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and len(_rounds(workers[0])) < 3:
                time.sleep(0.5)
            assert len(_rounds(workers[0])) >= 3, "no rounds merged"
            workers[1].kill()
            time.sleep(2.0)
            workers[1].start()
        events = wait_for_changes(settings, len(expected["events"]), timeout=420, settle=8.0)
        assert change_diff(events, expected["events"]) == ""
        rounds = _rounds(workers[0])
        last = [r for r in rounds if r["snapshot"] is not None][-1]
        assert last["instant"] == int(datetime.fromisoformat(AS_OF).timestamp())
        assert last["snapshot"]["values"] == expected["last"].values
    finally:
        for w in workers:
            w.stop()
    assert "Traceback" not in (tmp_path / "a.log").read_text()
