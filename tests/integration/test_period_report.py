"""The period report through a running worker: receipt facts published to their topic, the
projector counts them into the real Redis, and ``GET /reports/period`` equals the exact
recomputation from replay's facts and changes; so does ``GET /reports/clients``."""

from __future__ import annotations

import time
import urllib.request
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset
from tests.app.test_period_report import _exact, as_compared, exact_clients
from tests.integration.harness import Worker, produce_lines, read_topic, unique_env

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"


def _get(worker: Worker, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}{path}",
                                 headers={"Authorization": f"Bearer {worker.settings.api_token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return orjson.loads(resp.read())


def test_the_period_report_of_a_worker_equals_replay(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    lines = list(generate(SimConfig(clients=80, days=60, seed=13)))
    engine = Engine([load_ruleset("boostfeel")])
    facts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    rp = Replay(engine, datetime.fromisoformat(AS_OF), changes.append, lambda row: None, on_fact=facts.append)
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    rp.finish()
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES="boostfeel", LOYALTY_CLOCK=AS_OF,
                     REDIS_URL=redis_url)
    worker = Worker(env, tmp_path / "w.log")
    settings = worker.settings
    produce_lines(settings, lines)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
                len(read_topic(settings, settings.topic_facts)) < len(facts)
                or len({orjson.loads(r.value)["id"] for r in read_topic(settings, settings.topic_changes)})
                < len(changes)):
            time.sleep(1.0)
        query = "/reports/period?from=2026-03-30&to=2026-06-01&period=week&churn=boostfeel:lost"
        for _ in range(30):  # the projector follows the topic: until the last week adds up
            got = _get(worker, query)
            lost = sum(1 for c in changes
                       if c["data"]["to"] == "lost" and "2026-03-30" <= c["time"][:10] < "2026-06-01")
            if sum(r["sales"] for r in got["periods"]) == sum(
                    1 for f in facts if f["type"] == "sale" and "2026-03-30" <= f["time"][:10] < "2026-06-01") \
                    and sum(r["churned"] for r in got["periods"]) == lost:
                break
            time.sleep(1.0)
        published = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_facts)]
        clients = exact_clients(facts, changes, date(2026, 5, 1), date(2026, 6, 1), engine.cal, "boostfeel", None,
                                datetime.fromisoformat(AS_OF), "UTC")
        for _ in range(30):  # GET /reports/clients: once every change is projected, the exact rows
            rows = _get(worker, "/reports/clients?from=2026-05-01&to=2026-06-01&dimension=boostfeel&limit=1000")
            if as_compared(rows["rows"]) == clients:
                break
            time.sleep(1.0)
    finally:
        worker.stop()
    assert as_compared(rows["rows"]) == clients and len(clients) > 20
    assert {f["receipt_id"]: f for f in published} == {f["receipt_id"]: f for f in facts}
    cal = engine.cal
    for row in got["periods"]:
        span = (date.fromisoformat(row["from"]), date.fromisoformat(row["to"]))
        want = _exact(facts, changes, *span, cal)
        assert {k: row[k] for k in want} == want, span
    print(f"{len(facts)} facts, {len(got['periods'])} weeks equal")
