"""``loyalty campaign`` end to end: a running worker with a campaign scenario, the real
broker and Redis; the members the projection lists get the offer once, whoever runs the
command twice."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from app.batch.campaign import send
from app.batch.simulate import SimConfig, generate
from app.projection.store import Projection, namespace
from app.settings import Settings
from tests.integration.harness import Worker, produce_lines, read_topic, unique_env

pytestmark = pytest.mark.integration
AS_OF = "2026-06-15T00:00:00+00:00"
SPRING = """\
scenario: spring_sale
campaign: spring_2026
trigger: {manual: true}
action: {offer: discount, reward: "10.0", unit: percent, channel: email, template: spring_v1}
"""


def _members(settings: Settings, dim: str) -> dict[str, set[str]]:
    async def run() -> dict[str, set[str]]:
        proj = Projection.from_url(settings.redis_url, namespace(settings.app_id), settings.timezone)
        try:
            out: dict[str, set[str]] = collections.defaultdict(set)
            for seg in ("lost", "at_risk", "other", "potentially_loyal", "loyal", "vip", "new"):
                async for chunk in proj.iter_members(dim, seg):
                    out[seg].update(cid for cid, _ in chunk)
            return dict(out)
        finally:
            await proj.close()

    return asyncio.run(run())


def _post(worker: Worker, path: str, body: dict[str, str]) -> dict[str, object]:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{worker.env['LOYALTY_WEB_PORT']}{path}",
                                 data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {worker.settings.api_token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
        answer: dict[str, object] = orjson.loads(resp.read())
        return answer


def _quiet(settings: Settings, topic: str, least: int, timeout: float = 120.0) -> list[dict[str, object]]:
    deadline, last, same = time.monotonic() + timeout, -1, 0
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline and same < 3:
        time.sleep(1.5)
        records = [orjson.loads(r.value) for r in read_topic(settings, topic)]
        same = same + 1 if len(records) == last and len(records) >= least else 0
        last = len(records)
    return records


def test_a_campaign_reaches_the_members_once(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    spring = tmp_path / "spring.yaml"
    spring.write_text(SPRING)
    env = unique_env(kafka_bootstrap, tmp_path / "w", LOYALTY_RULES="boostfeel", LOYALTY_CLOCK=AS_OF,
                     LOYALTY_SCENARIOS=str(spring), REDIS_URL=redis_url)  # the actions topic: unique_env's, per run
    worker = Worker(env, tmp_path / "w.log")
    settings = worker.settings
    produce_lines(settings, list(generate(SimConfig(clients=60, days=60, seed=9))))
    worker.start()
    try:
        _quiet(settings, settings.topic_changes, 1)
        deadline = time.monotonic() + 60
        members: dict[str, set[str]] = {}
        while time.monotonic() < deadline and sum(map(len, members.values())) < 40:
            members = _members(settings, "boostfeel")
            time.sleep(1.0)
        segment = max(members, key=lambda s: len(members[s]))
        at = int(datetime.fromisoformat(AS_OF).timestamp())
        sent = asyncio.run(send(settings, "spring_sale", "boostfeel", segment, "spring-1", at))
        assert sent.members == len(members[segment]) > 0
        actions = _quiet(settings, settings.topic_actions, sent.members)
        # sent again with the same id: nobody gets it twice
        asyncio.run(send(settings, "spring_sale", "boostfeel", segment, "spring-1", at))
        time.sleep(3.0)
        again = _quiet(settings, settings.topic_actions, sent.members)
        # through the API, with another id: a second offer (within the default caps)
        answer = _post(worker, "/campaigns", {"scenario": "spring_sale", "dimension": "boostfeel",
                                              "segment": segment, "id": "spring-2"})
        assert answer["members"] == sent.members and answer["campaign"] == "spring-2"
        second = _quiet(settings, settings.topic_actions, 2 * sent.members)
    finally:
        worker.stop()
    got = {a["subject"] for a in actions if a["type"] == "loyalty.scenario.action"}
    assert got == members[segment]
    assert len({a["id"] for a in again}) == len({a["id"] for a in actions}) == len(got)
    sample = next(a for a in actions if a["type"] == "loyalty.scenario.action")
    assert sample["data"]["campaign"] == "spring_2026" and sample["data"]["trigger"]["campaign"] == "spring-1"
    assert len({a["id"] for a in second if a["type"] == "loyalty.scenario.action"}) == 2 * len(got)
    print(f"campaign to {segment}: {len(got)} actions for {sent.members} members")
