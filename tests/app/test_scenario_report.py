"""GET /reports/scenarios: per scenario (and ?by=campaign) actions, responses, conversions,
revenue within the response windows and the rates, counted once per event id in the
projection (real Redis), whoever counted them; equal to an exact recomputation from the
inputs."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from app.projection.scenarios import count, counted, report, tally
from app.projection.store import Projection
from app.serving.web import auth_middleware, errors_middleware, mount_scenario_report
from rules.calendar import iso, to_epoch
from rules.events import segment_changed
from rules.inputs.communications import RESPONSES, Communication
from rules.inputs.receipts import parse_receipt
from rules.scenario.events import ACTION_TYPE, CONVERSION_TYPE
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import ClientScenarios, ScenarioRunner
from rules.scenarios import Scenario, loads

DAY = 86_400
T0 = to_epoch(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


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
        bad = await client.get("/reports/scenarios?by=store", headers={"Authorization": "Bearer s3cret"})
        assert bad.status == 400
    assert body == {"win_back_at_risk": {"actions": 4, "responses": 0, "conversions": 1, "revenue": "0.00",
                                         "response_rate": 0.0, "conversion_rate": 0.25}}
    await projection.close()


def _scenario(sid: str, channel: str, response_days: int, campaign: str | None) -> Scenario:
    return loads(f"""scenario: {sid}
trigger: {{dimension: boostfeel, entered: at_risk}}
action: {{offer: bonus, template: t_{sid}, channel: {channel}}}
response_days: {response_days}
cooldown_days: 2
max_unanswered: 2
{f'campaign: {campaign}' if campaign else ''}
""", f"{sid}.yaml")


SCENARIOS = [_scenario("nudge_email", "email", 5, "spring"), _scenario("nudge_sms", "sms", 3, "spring"),
             _scenario("nudge_any", "any", 4, None)]


def _history(seed: int) -> tuple[list[dict[str, Any]], list[Any], list[Communication]]:
    """Change events, receipts and communications of 30 clients over 30 days, with the
    communications naming an action id half the time."""
    rnd = random.Random(seed)
    changes, receipts, comms = [], [], []
    for c in range(30):
        cid = f"c-{c}"
        for k in range(rnd.randint(1, 5)):
            at = T0 + k * 5 * DAY + rnd.randint(0, 4 * DAY)
            changes.append(segment_changed(client_id=cid, dimension="boostfeel", ruleset="boostfeel",
                                           version="v", at=at, from_=f"s{k}", to="at_risk",
                                           rule="boostfeel.at_risk", cause="time", metrics={}))
        for n in range(rnd.randint(0, 8)):
            at = T0 + rnd.randint(0, 30 * DAY)
            receipts.append(parse_receipt({"receipt_id": f"{cid}-r{n}", "client_id": cid, "type": "sale",
                                           "occurred_at": iso(at), "total": f"{rnd.randint(100, 99999) / 100:.2f}"},
                                          None))
        for n in range(rnd.randint(0, 10)):
            at = T0 + rnd.randint(0, 30 * DAY)
            comms.append(Communication(f"{cid}-m{n}", cid, datetime.fromtimestamp(at, UTC),
                                       rnd.choice(["email", "sms", "push"]),
                                       rnd.choice(["opened", "clicked", "replied", "sent", "delivered"]),
                                       None, None, at))
    return changes, receipts, comms


def _run(changes: list[dict[str, Any]], receipts: list[Any], comms: list[Communication],
         rnd: random.Random) -> list[dict[str, Any]]:
    """The runner over every client's inputs in event-time order (changes last on ties);
    half the communications name the action they deliver, once the action is known."""
    runner = ScenarioRunner(SCENARIOS, policy=ContactPolicy(max_age_hours=0))
    states: dict[str, ClientScenarios | None] = {}
    made: dict[str, list[str]] = {}
    timeline = sorted([(to_epoch(datetime.fromisoformat(e["time"])), 1, e) for e in changes]
                      + [(r.at, 0, r) for r in receipts] + [(c.at, 0, c) for c in comms],
                      key=lambda x: (x[0], x[1]))
    events: list[dict[str, Any]] = []
    for _, _, item in timeline:
        if isinstance(item, dict):
            cid = item["subject"]
            state, step = runner.change(states.get(cid), item)
            made.setdefault(cid, []).extend(a["id"] for a in step.actions)
        elif isinstance(item, Communication):
            cid = item.client_id
            if made.get(cid) and rnd.random() < 0.5:
                item.action_id = rnd.choice(made[cid])
            state, step = runner.communication(states.get(cid), item)
        else:
            cid = str(item.client_id)
            state, step = runner.receipt(states.get(cid), item)
        states[cid] = state
        events += step.events
    return events


def _recompute(events: list[dict[str, Any]], receipts: list[Any], comms: list[Communication],
               by: str) -> dict[str, dict[str, Any]]:
    """Brute force from the inputs: every action (by id) and the sales and responses in its window."""
    window = {s.id: s.response_days * DAY for s in SCENARIOS}
    actions = {e["id"]: e for e in events if e["type"] == ACTION_TYPE}
    rows: dict[str, dict[str, Any]] = {}
    for aid, a in actions.items():
        d, cid = a["data"], a["subject"]
        key = d["scenario"] if by == "scenario" else d["campaign"]
        if key is None:
            continue
        at = to_epoch(datetime.fromisoformat(d["send_at"]))
        end = at + window[d["scenario"]]
        sales = [Decimal(r.total) / 100 for r in receipts if r.client_id == cid and at < r.at <= end]
        answered = any(c.client_id == cid and c.event in RESPONSES and (
            c.action_id == aid if c.action_id else
            d["channel"] in ("any", c.channel) and at < c.at <= end) for c in comms)
        row = rows.setdefault(key, {"actions": 0, "responses": 0, "conversions": 0, "revenue": Decimal(0)})
        row["actions"] += 1
        row["responses"] += int(answered)
        row["conversions"] += int(bool(sales))
        row["revenue"] += sum(sales, Decimal(0))
    return {k: {**v, "revenue": f"{v['revenue']:.2f}",
                "response_rate": round(v["responses"] / v["actions"], 4),
                "conversion_rate": round(v["conversions"] / v["actions"], 4)} for k, v in sorted(rows.items())}


async def test_report_equals_an_exact_recomputation_per_scenario_and_campaign(redis_url: str, ns: str) -> None:
    changes, receipts, comms = _history(18)
    events = _run(changes, receipts, comms, random.Random(4))
    kinds = {e["type"] for e in events}
    assert len(kinds) == 4 and sum(e["type"] == ACTION_TYPE for e in events) > 40  # every kind occurs
    projection = Projection.from_url(redis_url, ns)
    prefix = await projection.prefix_now()
    raw = [orjson.dumps(e) for e in events]
    assert await count(projection.redis, prefix, counted(raw)) == len({e["id"] for e in events})
    assert await count(projection.redis, prefix, counted(raw[::3])) == 0  # redelivered
    for by in ("scenario", "campaign"):
        expected = _recompute(events, receipts, comms, by)
        assert await report(projection.redis, prefix, by) == expected == tally(events + events[:9], by)
    assert set(expected) == {"spring"}
    await projection.close()
