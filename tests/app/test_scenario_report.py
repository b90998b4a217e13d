"""GET /reports/scenarios: actions, conversions and the rate per scenario, counted once per
event id in the projection (real Redis), whoever counted them."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.projection.scenarios import count, counted
from app.projection.store import Projection
from app.serving.web import auth_middleware, errors_middleware, mount_scenario_report
from rules.scenario_state import ACTION_TYPE, CONVERSION_TYPE


def _event(kind: str, eid: str, scenario: str = "win_back_at_risk") -> bytes:
    return orjson.dumps({"id": eid, "type": kind, "data": {"scenario": scenario}})


async def test_scenario_report_counts_once_per_event_id(redis_url: str, ns: str) -> None:
    projection = Projection.from_url(redis_url, ns)
    prefix = await projection.prefix_now()
    first = [_event(ACTION_TYPE, f"a{i}") for i in range(4)] + [_event(CONVERSION_TYPE, "c0"), b"not json"]
    assert await count(projection.redis, prefix, counted(first)) == 5
    # a redelivery and a second worker's re-send count nothing
    assert await count(projection.redis, prefix, counted([*first[:3], _event(CONVERSION_TYPE, "c0")])) == 0
    web_app = web.Application(middlewares=[errors_middleware, auth_middleware("s3cret")])
    mount_scenario_report(web_app, projection)
    async with TestClient(TestServer(web_app)) as client:
        denied = await client.get("/reports/scenarios")
        assert denied.status == 401
        resp = await client.get("/reports/scenarios", headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 200
        body = orjson.loads(await resp.read())
    assert body == {"win_back_at_risk": {"actions": 4, "conversions": 1, "conversion_rate": 0.25}}
    await projection.close()
