"""GET /reports/scenarios: conversion rate per scenario from the worker's counters."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.metrics import Metrics
from app.serving.web import auth_middleware, errors_middleware, mount_scenario_report


async def test_scenario_report_counts_and_rate_with_auth() -> None:
    metrics = Metrics.create()
    metrics.scenario_actions.labels("win_back_at_risk").inc(4)
    metrics.scenario_conversions.labels("win_back_at_risk").inc(1)
    web_app = web.Application(middlewares=[errors_middleware, auth_middleware("s3cret")])
    mount_scenario_report(web_app, metrics)
    async with TestClient(TestServer(web_app)) as client:
        denied = await client.get("/reports/scenarios")
        assert denied.status == 401
        resp = await client.get("/reports/scenarios", headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 200
        body = orjson.loads(await resp.read())
    row = body["win_back_at_risk"]
    assert (row["actions"], row["conversions"]) == (4, 1)
    assert abs(row["conversion_rate"] - 0.25) < 1e-9
