"""Every HTTP endpoint over a projection in the real local Redis, filled from a replay of
simulated receipts (the aiohttp app as mounted in the worker, without Kafka)."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.projection.store import Projection, namespace
from app.serving.api import Api
from app.serving.web import mount
from rules.ruleset import preset_path
from tests.app.conftest import AS_OF, AUTH, TOKEN, Data, filled

pytestmark = pytest.mark.integration


async def _app(data: Data, proj: Projection, token: str = TOKEN) -> web.Application:
    app = web.Application()
    mount(app, Api(proj, data.engine, lambda: AS_OF), token, lambda: data.table.items())
    return app


@pytest.fixture
async def client(data: Data, redis_url: str, ns: str) -> AsyncIterator[TestClient[Any, Any]]:
    proj = await filled(redis_url, ns, data)
    async with TestClient(TestServer(await _app(data, proj))) as c:
        yield c


async def get(c: TestClient[Any, Any], path: str, status: int = 200, **kw: Any) -> Any:
    headers = {**AUTH, **kw.pop("headers", {})}
    resp = await c.get(path, headers=headers, **kw)
    body = await resp.text()
    assert resp.status == status, body
    assert "Traceback" not in body
    return await resp.json() if resp.content_type == "application/json" else body


async def test_client_lookup_matches_replay(client: TestClient[Any, Any], data: Data) -> None:
    for cid, segs in list(data.segments.items())[:25]:
        body = await get(client, f"/clients/{cid}")
        assert {d: s["segment"] for d, s in body["segments"].items()} == segs
        assert body["metrics"]["lifetime_value"] == data.metrics[cid]["lifetime_value"]
        assert body["as_of"] == "2026-06-15T00:00:00Z"
    # since / previous / last month from the events of one client
    cid = next(iter(data.segments))
    mine = [e for e in data.events if e["subject"] == cid and e["data"]["dimension"] == "boostfeel"]
    seg = (await get(client, f"/clients/{cid}"))["segments"]["boostfeel"]
    assert seg["since"] == mine[-1]["time"]
    assert seg["previous"] == mine[-1]["data"]["from"]
    held_in_may = [e for e in mine if e["time"] < "2026-06-01"]
    assert seg["last_month"] == (held_in_may[-1]["data"]["to"] if held_in_may else None)


async def test_client_errors(client: TestClient[Any, Any]) -> None:
    body = await get(client, "/clients/nobody", 404)
    assert body["error"] == "not_found"
    body = await get(client, "/clients/" + "x" * 300, 400)
    assert body["parameter"] == "client_id"


async def test_auth(client: TestClient[Any, Any]) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = await client.get("/segments", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.post("/rules/preview", data="x")
    assert resp.status == 401
    for public in ("/openapi.json", "/dashboard", "/static/chart.umd.js", "/static/dashboard.js"):
        resp = await client.get(public)
        assert resp.status == 200, public


async def test_auth_disabled_without_token(data: Data, redis_url: str, ns: str) -> None:
    proj = Projection.from_url(redis_url, ns)
    async with TestClient(TestServer(await _app(data, proj, token=""))) as c:
        resp = await c.get("/segments")
        assert resp.status == 200


async def test_segments_sizes(client: TestClient[Any, Any], data: Data) -> None:
    body = await get(client, "/segments")
    for dim in ("boostfeel", "rfm", "rfm_score"):
        expected = Counter(s[dim] for s in data.segments.values())
        assert body["dimensions"][dim]["segments"] == dict(expected)
        assert body["dimensions"][dim]["clients"] == len(data.segments)


async def test_members_paging_and_csv(client: TestClient[Any, Any], data: Data) -> None:
    seg, n = Counter(s["boostfeel"] for s in data.segments.values()).most_common(1)[0]
    expected = {c for c, s in data.segments.items() if s["boostfeel"] == seg}
    got: list[str] = []
    cursor: str | None = "0"
    pages = 0
    while cursor is not None:
        page = await get(client, f"/segments/boostfeel/{seg}/members",
                         params={"cursor": cursor, "limit": "5"})
        assert page["total"] == n and len(page["members"]) <= 5
        got += page["members"]
        cursor = page["next_cursor"]
        pages += 1
    assert sorted(got) == sorted(expected)  # each member once
    assert -(-n // 5) <= pages <= -(-n // 5) + 1
    for kw in ({"params": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}):
        resp = await client.get(f"/segments/boostfeel/{seg}/members", headers={**AUTH, **kw.get("headers", {})},
                                params=kw.get("params", {}))
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(await resp.text())))
        assert {r["client_id"] for r in rows} == expected
        assert {r["segment"] for r in rows} == {seg} and all(r["since"].endswith("Z") for r in rows)


async def test_members_errors(client: TestClient[Any, Any]) -> None:
    for params, name in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                         ({"cursor": "-1"}, "cursor"), ({"cursor": "1:2:3"}, "cursor"),
                         ({"cursor": "x"}, "cursor"), ({"format": "xml"}, "format")):
        body = await get(client, "/segments/boostfeel/lost/members", 400, params=params)
        assert body["parameter"] == name and body["error"] == "bad_request"
    body = await get(client, "/segments/nope/lost/members", 404)
    assert body["error"] == "not_found"


async def test_transitions_report(client: TestClient[Any, Any], data: Data) -> None:
    body = await get(client, "/reports/transitions",
                     params={"dimension": "boostfeel", "from": "2026-01-01", "to": "2026-06-15"})
    mine = [e["data"] for e in data.events if e["data"]["dimension"] == "boostfeel"]
    assert body["total"]["changes"] == len(mine)
    expected: dict[str, Counter[str]] = {}
    for d in mine:
        expected.setdefault(d["from"] or "", Counter())[d["to"]] += 1
    assert body["total"]["matrix"] == {k: dict(v) for k, v in expected.items()}
    assert [p["period"] for p in body["periods"]] == sorted({e["time"][:7] for e in data.events
                                                             if e["data"]["dimension"] == "boostfeel"})
    by_day = await get(client, "/reports/transitions",
                       params={"dimension": "boostfeel", "period": "week", "from": "2026-01-01"})
    assert sum(p["changes"] for p in by_day["periods"]) == len(mine)


async def test_sizes_and_revenue_reports(client: TestClient[Any, Any], data: Data) -> None:
    sizes = await get(client, "/reports/sizes", params={"dimension": "rfm", "from": "2026-06-01",
                                                        "basis": "snapshot"})
    expected = dict(Counter(s["rfm"] for s in data.segments.values()))
    assert sizes["days"] == [{"date": "2026-06-14", "sizes": expected}]
    rev = await get(client, "/reports/revenue", params={"dimension": "rfm"})
    (now,) = rev["periods"]
    total = sum(Decimal(m["lifetime_value"]) for m in data.metrics.values())
    assert Decimal(now["total"]["revenue"]) == total
    assert {s: v["clients"] for s, v in now["segments"].items()} == expected
    monthly = await get(client, "/reports/revenue", params={"dimension": "rfm", "period": "month"})
    assert [p["period"] for p in monthly["periods"]] == ["2026-06"]
    assert monthly["periods"][0]["total"] == now["total"]


def _exact_sizes(events: list[dict[str, Any]], dim: str, day: str) -> dict[str, int]:
    """Each client's segment at the end of ``day`` (UTC business days): the target of its last
    change of that dimension up to then, counted; written from the change events alone."""
    held: dict[str, str] = {}
    for e in events:
        if e["data"]["dimension"] == dim and e["time"][:10] <= day:
            held[e["subject"]] = e["data"]["to"]
    return dict(sorted(Counter(held.values()).items()))


@pytest.mark.parametrize("dim", ["rfm", "boostfeel"])
async def test_sizes_over_event_time_equal_the_change_events(client: TestClient[Any, Any], data: Data,
                                                             dim: str) -> None:
    body = await get(client, "/reports/sizes", params={"dimension": dim, "from": "2026-04-10",
                                                       "to": "2026-06-15", "period": "month"})
    assert body["basis"] == "event"
    assert [p["period"] for p in body["days"]] == ["2026-04", "2026-05", "2026-06"]
    assert [p["date"] for p in body["days"]] == ["2026-04-30", "2026-05-31", "2026-06-15"]
    for point in body["days"]:
        assert point["sizes"] == _exact_sizes(data.events, dim, point["date"]), point["date"]
        lo = max("2026-04-10", point["period"] + "-01")
        mine = [e["data"] for e in data.events if e["data"]["dimension"] == dim
                and lo <= e["time"][:10] <= point["date"]]
        assert point["entries"] == dict(sorted(Counter(d["to"] for d in mine).items()))
        assert point["exits"] == dict(sorted(Counter(d["from"] for d in mine if d["from"]).items()))
    assert body["days"][-1]["sizes"] == dict(sorted(Counter(s[dim] for s in data.segments.values()).items()))
    daily = await get(client, "/reports/sizes", params={"dimension": dim, "from": "2026-05-20",
                                                        "to": "2026-06-02", "period": "day"})
    assert len(daily["days"]) == 14
    for point in daily["days"]:
        assert point["sizes"] == _exact_sizes(data.events, dim, point["date"]), point["date"]


async def test_report_parameter_errors(client: TestClient[Any, Any]) -> None:
    cases = [("/reports/transitions", {}, "dimension"),
             ("/reports/transitions", {"dimension": "nope"}, "dimension"),
             ("/reports/transitions", {"dimension": "rfm", "period": "year"}, "period"),
             ("/reports/transitions", {"dimension": "rfm", "from": "2026-13-01"}, "from"),
             ("/reports/transitions", {"dimension": "rfm", "from": "2026-06-02", "to": "2026-06-01"}, "from"),
             ("/reports/sizes", {"dimension": "rfm", "to": "yesterday"}, "to"),
             ("/reports/sizes", {"dimension": "rfm", "from": "1990-01-01"}, "from"),
             ("/reports/sizes", {"dimension": "rfm", "basis": "wall"}, "basis"),
             ("/reports/sizes", {"dimension": "rfm", "period": "total"}, "period"),
             ("/reports/revenue", {"dimension": "rfm", "period": "week"}, "period")]
    for path, params, name in cases:
        body = await get(client, path, 400, params=params)
        assert body["parameter"] == name, (path, params, body)
        assert name in body["message"]


async def test_rules_preview(client: TestClient[Any, Any], data: Data) -> None:
    text = preset_path("boostfeel").read_text()
    resp = await client.post("/rules/preview", data=text, headers=AUTH)
    same = await resp.json()
    assert resp.status == 200, same
    assert same["clients"] == len(data.table)
    dim = same["dimensions"]["boostfeel"]
    assert dim["changed"] == 0
    assert {s: v["before"] for s, v in dim["segments"].items()} == \
        dict(Counter(s["boostfeel"] for s in data.segments.values()))
    stricter = text.replace("lost_days: 40", "lost_days: 25")
    resp = await client.post("/rules/preview", data=stricter, headers=AUTH)
    body = await resp.json()
    dim = body["dimensions"]["boostfeel"]
    lost = dim["segments"]["lost"]
    assert dim["changed"] > 0 and lost["enter"] > 0 and lost["leave"] == 0
    assert lost["after"] == lost["before"] + lost["enter"]
    assert sum(v["enter"] for v in dim["segments"].values()) == dim["changed"]
    assert sum(v["leave"] for v in dim["segments"].values()) == dim["changed"]
    # nothing was written: the projection still says what it said
    assert (await get(client, "/segments"))["dimensions"]["boostfeel"]["segments"] == \
        {s: v["before"] for s, v in dim["segments"].items() if v["before"]}


async def test_rules_preview_errors(client: TestClient[Any, Any]) -> None:
    for body in ("", "ruleset: x\ndimensions: [", "ruleset: x\ndimensions:\n  - id: d\n    segments:\n"
                 "      - id: s\n        when: no_such_metric > 1\n"):
        resp = await client.post("/rules/preview", data=body, headers=AUTH)
        payload = await resp.json()
        assert resp.status == 400, payload
        assert payload["parameter"] == "body" and "Traceback" not in payload["message"]


async def test_redis_down_is_503(data: Data) -> None:
    proj = Projection.from_url("redis://127.0.0.1:1/0", namespace("down"), socket_connect_timeout=0.5)
    async with TestClient(TestServer(await _app(data, proj))) as c:
        resp = await c.get("/clients/c-1", headers=AUTH)
        assert resp.status == 503
        assert (await resp.json())["error"] == "unavailable"


async def test_unknown_route_is_json_404(client: TestClient[Any, Any]) -> None:
    body = await get(client, "/no/such/thing", 404)
    assert body["error"] == "not_found"


async def test_openapi_document_is_valid_and_complete(client: TestClient[Any, Any]) -> None:
    from openapi_spec_validator import validate

    spec = await get(client, "/openapi.json")
    validate(spec)
    routes = {r.resource.canonical for r in client.app.router.routes()  # type: ignore[union-attr]
              if r.resource is not None and not r.resource.canonical.startswith("/static")}
    assert routes <= set(spec["paths"])
    for path in ("/health", "/ready", "/metrics", "/clients/{client_id}", "/rules/preview"):
        assert path in spec["paths"]
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert spec["paths"]["/clients/{client_id}"]["get"]["responses"]["401"]
