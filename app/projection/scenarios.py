"""Scenario results in the projection: per scenario and per campaign, cluster-wide.

The projector reads the scenario-actions topic (CloudEvents with deterministic ids,
:mod:`rules.scenario.events`) and counts each event once (``COUNT``: a per-scenario set of
the ids seen, so a redelivery or a worker's at-least-once re-send counts nothing). Every
worker and API pod then reads the same figures (``GET /reports/scenarios``, ``?by=campaign``),
and they survive restarts, unlike a process's Prometheus counters.

Figures: ``actions`` (offers sent: ``loyalty.scenario.action``), ``responses`` (actions
answered by a communication: ``.responded``), ``conversions`` (actions followed by a sale in
their response window: ``.converted``), ``revenue`` (the sales within the response windows,
each sale once per action whose window holds it: ``.revenue``; hundredths of the currency in
Redis, a decimal string in the report), and the rates over ``actions``.

Keys, under the generation prefix ``P``: ``scens`` (scenario ids), ``scen:<id>`` (hash of
the figures), ``scen:ids:<id>`` (set of event ids; about 60-100 bytes of Redis memory per
event), ``camps`` (campaign ids) and ``camp:<id>`` (hash of the figures of the actions of
scenarios and one-off campaigns that name the campaign).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.projection.store import cents, money
from rules.scenario.events import ACTION_TYPE, CONVERSION_TYPE, RESPONDED_TYPE, REVENUE_TYPE

FIELDS = {ACTION_TYPE: "actions", RESPONDED_TYPE: "responses", CONVERSION_TYPE: "conversions",
          REVENUE_TYPE: "revenue"}
FIGURES = ("actions", "responses", "conversions", "revenue")

# ARGV: [1] prefix P [2] scenario [3] event id [4] field [5] amount [6] campaign ('' none).
# Returns 1 counted, 0 seen before.
COUNT = """
if redis.call('SADD', ARGV[1] .. 'scen:ids:' .. ARGV[2], ARGV[3]) == 1 then
  redis.call('HINCRBY', ARGV[1] .. 'scen:' .. ARGV[2], ARGV[4], ARGV[5])
  redis.call('SADD', ARGV[1] .. 'scens', ARGV[2])
  if ARGV[6] ~= '' then
    redis.call('HINCRBY', ARGV[1] .. 'camp:' .. ARGV[6], ARGV[4], ARGV[5])
    redis.call('SADD', ARGV[1] .. 'camps', ARGV[6])
  end
  return 1
end
return 0
"""

Row = tuple[str, str, str, int, str]  # scenario, event id, field, amount, campaign ('' none)


def counted(values: Iterable[bytes | None]) -> list[Row]:
    """(scenario, event id, field, amount, campaign) of the scenario events among raw records
    (amount: 1, or the revenue in hundredths)."""
    out: list[Row] = []
    for raw in values:
        try:
            event = orjson.loads(raw or b"")
            row = _row(event)
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            continue  # not a scenario event: nothing to count
        if row is not None:
            out.append(row)
    return out


def _row(event: Any) -> Row | None:
    field = FIELDS.get(event.get("type"))
    if field is None:
        return None
    data = event["data"]
    amount = 1
    if field == "revenue":
        amount = cents(data["amount"]) or 0
    return str(data["scenario"]), str(event["id"]), field, amount, str(data.get("campaign") or "")


async def count(redis: aioredis.Redis, prefix: str, rows: Sequence[Row]) -> int:
    """Count ``rows`` (from :func:`counted`) once each; returns how many were new."""
    if not rows:
        return 0
    script = redis.register_script(COUNT)
    pipe = redis.pipeline(transaction=False)
    for scenario, event_id, field, amount, campaign in rows:
        await script(args=[prefix, scenario, event_id, field, amount, campaign], client=pipe)
    return sum(int(r) for r in await pipe.execute())


def figures(values: dict[str, int]) -> dict[str, Any]:
    """The report row of one scenario or campaign from its counts (revenue in hundredths)."""
    actions = values.get("actions", 0)
    out: dict[str, Any] = {f: values.get(f, 0) for f in FIGURES}
    out["revenue"] = money(out["revenue"])
    out["response_rate"] = round(out["responses"] / actions, 4) if actions else None
    out["conversion_rate"] = round(out["conversions"] / actions, 4) if actions else None
    return out


def tally(events: Iterable[dict[str, Any]], by: str = "scenario") -> dict[str, dict[str, Any]]:
    """The report over decoded events, without Redis (replay's, a test's): each event id
    counted once, like :data:`COUNT`."""
    seen: set[tuple[str, str]] = set()
    sums: dict[str, dict[str, int]] = {}
    for event in events:
        row = _row(event)
        if row is None or (row[0], row[1]) in seen:
            continue
        seen.add((row[0], row[1]))
        key = row[0] if by == "scenario" else row[4]
        if key:
            acc = sums.setdefault(key, {})
            acc[row[2]] = acc.get(row[2], 0) + row[3]
    return {k: figures(v) for k, v in sorted(sums.items())}


async def report(redis: aioredis.Redis, prefix: str, by: str = "scenario") -> dict[str, dict[str, Any]]:
    """Per scenario (``by="campaign"``: per campaign): actions, responses, conversions,
    revenue and the rates (None before any action)."""
    members, hashes = ("scens", "scen:") if by == "scenario" else ("camps", "camp:")
    ids = sorted(x.decode() if isinstance(x, bytes) else str(x) for x in await redis.smembers(prefix + members))
    out: dict[str, dict[str, Any]] = {}
    for key in ids:
        row = await redis.hgetall(f"{prefix}{hashes}{key}")
        out[key] = figures({(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in row.items()})
    return out
