"""Scenario results in the projection: actions and conversions per scenario, cluster-wide.

The projector reads the scenario-actions topic (actions and conversions, CloudEvents with
deterministic ids) and counts each event once (``COUNT``: a per-scenario set of the ids
seen, so a redelivery or a worker's at-least-once re-send counts nothing). Every worker and
API pod then reads the same figures (``GET /reports/scenarios``), and they survive restarts,
unlike a process's Prometheus counters. Keys, under the generation prefix ``P``:
``scens`` (scenario ids), ``scen:<id>`` (hash: actions, conversions), ``scen:ids:<id>``
(set of event ids; about 60-100 bytes of Redis memory per action).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from rules.scenario_state import ACTION_TYPE, CONVERSION_TYPE

FIELDS = {ACTION_TYPE: "actions", CONVERSION_TYPE: "conversions"}

# ARGV: [1] prefix P [2] scenario [3] event id [4] field. Returns 1 counted, 0 seen before.
COUNT = """
if redis.call('SADD', ARGV[1] .. 'scen:ids:' .. ARGV[2], ARGV[3]) == 1 then
  redis.call('HINCRBY', ARGV[1] .. 'scen:' .. ARGV[2], ARGV[4], 1)
  redis.call('SADD', ARGV[1] .. 'scens', ARGV[2])
  return 1
end
return 0
"""


def counted(values: Iterable[bytes | None]) -> list[tuple[str, str, str]]:
    """(scenario, event id, field) of the actions and conversions among raw records."""
    out: list[tuple[str, str, str]] = []
    for raw in values:
        try:
            event = orjson.loads(raw or b"")
            field = FIELDS.get(event.get("type"))
            if field is not None:
                out.append((str(event["data"]["scenario"]), str(event["id"]), field))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            continue  # not a scenario event: nothing to count
    return out


async def count(redis: aioredis.Redis, prefix: str, rows: Sequence[tuple[str, str, str]]) -> int:
    """Count ``rows`` (from :func:`counted`) once each; returns how many were new."""
    if not rows:
        return 0
    script = redis.register_script(COUNT)
    pipe = redis.pipeline(transaction=False)
    for scenario, event_id, field in rows:
        await script(args=[prefix, scenario, event_id, field], client=pipe)
    return sum(int(r) for r in await pipe.execute())


async def report(redis: aioredis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """Per scenario: actions, conversions and the conversion rate (None before any action)."""
    ids = sorted(x.decode() if isinstance(x, bytes) else str(x) for x in await redis.smembers(prefix + "scens"))
    out: dict[str, dict[str, Any]] = {}
    for sid in ids:
        row = await redis.hgetall(f"{prefix}scen:{sid}")
        values = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in row.items()}
        actions, conversions = values.get("actions", 0), values.get("conversions", 0)
        out[sid] = {"actions": actions, "conversions": conversions,
                    "conversion_rate": round(conversions / actions, 4) if actions else None}
    return out
