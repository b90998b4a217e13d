"""The rebuild of the period keys (:mod:`app.projection.periods`): the receipt-facts topic
counted into the new generation, then the days it no longer holds copied from the old one.

A topic keeps its records for its retention only (Kafka's default: 7 days), so recounting it
alone would lose every older day of the period reports. Before the switch,
:func:`rebuild_facts`:

1. counts the whole facts topic into the new generation (its end offsets are returned: the
   rebuild counts what comes after them once it has switched, as it does for changes);
2. compares each day of the old generation with the new one by their receipt ids (``pseen:``),
   in one atomic script per day (``COPY_DAY``; the live projector still writes the old
   generation meanwhile):

   * the new generation holds every receipt id of the old one that day: kept as recounted;
   * the new generation has no such day: its keys (``pd: pa: pc: pv: pseen:``) are copied;
   * the old generation holds every id of the new one and more (the topic lost the oldest
     receipts of that day, or the live projector is ahead): the old day replaces the new one;
   * each holds ids the other lacks (rare: the retention's boundary day when a receipt of that
     day also came late): the old day replaces the new one and the topic's facts of that day
     are counted again on top (each receipt id once: the new-only ones are added);

3. merges ``pfirst`` (each client's earliest sale: the smaller) and ``pcur`` (the union).

So a day the topic still holds in full is recounted from it, an older one is kept as the
previous generation counted it, and none is counted twice. A day counted by a version without
per-client keys has no ``pc:``/``pv:`` (the per-client report reads zero for it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from app.projection.periods import DAY_KEYS, count, day_of, facts
from app.projection.store import text
from rules.calendar import BusinessCalendar

BATCH = 1000
OnBatch = Callable[[list[Any]], Awaitable[None]]
Read = Callable[[OnBatch], Awaitable[dict[int, int]]]  # every record of the facts topic; its end offsets

# ARGV: [1] old prefix [2] new prefix [3] day [4] its score [5..] the kinds of day keys.
# Returns 0 kept, 1 copied, 2 replaced, 3 replaced and to be recounted (see the docstring).
COPY_DAY = """
local po, pn, day = ARGV[1], ARGV[2], ARGV[3]
local so, sn = po .. 'pseen:' .. day, pn .. 'pseen:' .. day
local old_n, new_n = redis.call('SCARD', so), redis.call('SCARD', sn)
local both = 0
if old_n > 0 and new_n > 0 then both = redis.call('SINTERCARD', 2, so, sn) end
if both == old_n then return 0 end
local result = 1
if new_n > 0 then
  if both == new_n then result = 2 else result = 3 end
end
for i = 5, #ARGV do
  local src, dst = po .. ARGV[i] .. ':' .. day, pn .. ARGV[i] .. ':' .. day
  if redis.call('EXISTS', src) == 1 then redis.call('COPY', src, dst, 'REPLACE') else redis.call('DEL', dst) end
end
redis.call('ZADD', pn .. 'pdays', ARGV[4], day)
return result
"""

# ARGV: [1] the new generation's pfirst key [2..] client, epoch s pairs: the smaller wins.
MERGE_FIRST = """
local key = ARGV[1]
for i = 2, #ARGV, 2 do
  local t = redis.call('HGET', key, ARGV[i])
  if not t or tonumber(t) > tonumber(ARGV[i + 1]) then redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
end
return 1
"""


async def rebuild_facts(redis: aioredis.Redis, old: str, new: str, cal: BusinessCalendar,
                        read: Read) -> tuple[dict[int, int], dict[str, int]]:
    """Count the facts topic (``read``) into prefix ``new``, then keep the days it no longer
    holds from prefix ``old``. Returns the topic's end offsets (to catch up from after the
    switch) and counts for the rebuild's summary."""
    stats = {"receipt_facts": 0, "fact_days_copied": 0, "fact_days_replaced": 0, "fact_days_recounted": 0}

    async def every(records: list[Any]) -> None:
        stats["receipt_facts"] += await count(redis, new, facts(r.value for r in records), cal)

    ends = await read(every)
    again = await copy_days(redis, old, new, stats)
    if again:
        async def some(records: list[Any]) -> None:
            rows = [f for f in facts(r.value for r in records) if day_of(cal, f.at) in again]
            stats["receipt_facts"] += await count(redis, new, rows, cal)

        await read(some)
    await merge_first(redis, old, new)
    await redis.sunionstore(f"{new}pcur", [f"{new}pcur", f"{old}pcur"])
    return ends, stats


async def copy_days(redis: aioredis.Redis, old: str, new: str, stats: dict[str, int]) -> set[str]:
    """``COPY_DAY`` for every day of the old generation; returns the days to recount."""
    script = redis.register_script(COPY_DAY)
    days: list[tuple[Any, float]] = await redis.zrange(f"{old}pdays", 0, -1, withscores=True)  # type: ignore[assignment]
    again: set[str] = set()
    for n in range(0, len(days), 100):
        chunk = [(text(d), int(score)) for d, score in days[n:n + 100]]
        pipe = redis.pipeline(transaction=False)
        for day, score in chunk:
            await script(args=[old, new, day, score, *DAY_KEYS], client=pipe)
        for (day, _), result in zip(chunk, await pipe.execute(), strict=True):
            if int(result) == 1:
                stats["fact_days_copied"] += 1
            elif int(result) >= 2:
                stats["fact_days_replaced"] += 1
            if int(result) == 3:
                stats["fact_days_recounted"] += 1
                again.add(day)
    return again


async def merge_first(redis: aioredis.Redis, old: str, new: str) -> None:
    """Each client's earliest sale: the smaller of the two generations' (``pfirst``)."""
    script = redis.register_script(MERGE_FIRST)
    cursor = 0
    while True:
        cursor, rows = await redis.hscan(f"{old}pfirst", cursor=cursor, count=BATCH)
        pairs = [x for k, v in rows.items() for x in (k, v)] if isinstance(rows, dict) else []
        if pairs:
            await script(args=[f"{new}pfirst", *pairs])
        if cursor == 0:
            return
