"""Per-client figures of a period from the receipt facts' per-day keys (``pc:``/``pv:``, written
by ``COUNT`` in :mod:`app.projection.periods`), for the per-client report and the ``current``
attribution of the period report.

* **The per-client report** (``GET /reports/clients``, ``loyalty client-report``): per client,
  its net revenue (cents of its receipts dated in ``[from, to)``, returns subtracted) and
  visits (its sale receipts in the period), with its current segment in one dimension, since
  when, and the segment it held at the end of last month (the lookup's ``last_month``).
  Which clients: every client with a receipt in the period; with a segment, every **current**
  member of it instead, those with no receipt in the period with revenue 0 and visits 0.
  Client-id order, paged by the last client id of the previous page (a page is stable while
  the data changes: each page re-reads the candidates and the figures of the ids after it).
* **Current attribution** (:class:`Current`): each client's revenue and sales of a day go to
  the segment it holds now in each dimension; a day's figures are read once per request.

Sums are done in Redis (``SUMS``): integers, exact below 2**53 cents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from app.projection.history_reads import FETCH
from app.projection.store import text

CHUNK = 1000
SUMS_CHUNK = 250  # clients per SUMS call
CLIENT_FIELDS = ("", ":since", ":sm", ":lm", ":lmseg")  # of the client hash, after "<dimension>"

# ARGV: [1] prefix P [2] number of days n [3 .. 2+n] the days [3+n ..] client ids. Returns,
# per client, its cents and visits summed over the days (0 and 0: no receipt). A day's hash
# with fewer than 4 fields per client asked is read whole (HGETALL: a small hash is a listpack,
# where each HMGET field is a linear search), a larger one field by field (HMGET).
SUMS = """
local p, n = ARGV[1], tonumber(ARGV[2])
local ids, at, rev, vis = {}, {}, {}, {}
for i = 3 + n, #ARGV do
  ids[#ids + 1] = ARGV[i]
  at[ARGV[i]] = #ids
  rev[#ids], vis[#ids] = 0, 0
end
if #ids == 0 then return {} end
local function add(key, sums)
  if redis.call('HLEN', key) < 4 * #ids then
    local all = redis.call('HGETALL', key)
    for j = 1, #all, 2 do
      local i = at[all[j]]
      if i then sums[i] = sums[i] + tonumber(all[j + 1]) end
    end
  else
    local got = redis.call('HMGET', key, unpack(ids))
    for i = 1, #ids do
      if got[i] then sums[i] = sums[i] + tonumber(got[i]) end
    end
  end
end
for d = 3, 2 + n do
  add(p .. 'pc:' .. ARGV[d], rev)
  add(p .. 'pv:' .. ARGV[d], vis)
end
local out = {}
for i = 1, #ids do
  out[2 * i - 1], out[2 * i] = rev[i], vis[i]
end
return out
"""


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One client's figures of the period and its fields in the dimension: ``fields`` holds
    ``<d>``, ``<d>:since``, ``<d>:sm``, ``<d>:lm``, ``<d>:lmseg`` of its hash when present."""

    client_id: str
    cents: int
    visits: int
    fields: dict[str, str]


async def candidates(redis: aioredis.Redis, prefix: str, days: Sequence[str], dim: str,
                     segment: str | None) -> list[str]:
    """The clients of the report, sorted: the current members of ``segment``, or every client
    with a receipt on one of ``days``."""
    if segment is not None:
        return sorted(text(m) for m in await redis.smembers(f"{prefix}seg:{dim}:{segment}"))
    pipe = redis.pipeline(transaction=False)
    for d in days:
        pipe.hkeys(f"{prefix}pc:{d}")
    ids: set[str] = set()
    for keys in await pipe.execute() if days else []:
        ids.update(text(k) for k in keys)
    return sorted(ids)


async def rows_of(redis: aioredis.Redis, prefix: str, days: Sequence[str], dim: str,
                  ids: Sequence[str]) -> list[ClientRow]:
    """The figures of ``ids`` (at most a chunk) over ``days``."""
    if not ids:
        return []
    sums, fetch = redis.register_script(SUMS), redis.register_script(FETCH)
    names = [f"{dim}{f}" for f in CLIENT_FIELDS]
    totals: list[Any] = []
    for n in range(0, len(ids), SUMS_CHUNK):  # one call at a time: each bounded by its clients x days
        totals += await sums(args=[prefix, len(days), *days, *ids[n:n + SUMS_CHUNK]])
    flat = await fetch(args=[f"{prefix}c:", len(names), *names, *ids])
    k = len(names)
    return [ClientRow(cid, int(totals[2 * i]), int(totals[2 * i + 1]),
                      {name: text(v) for name, v in zip(names, flat[i * k:i * k + k], strict=True) if v is not None})
            for i, cid in enumerate(ids)]


async def iter_clients(redis: aioredis.Redis, prefix: str, days: Sequence[str], dim: str, segment: str | None,
                       after: str = "", chunk: int = CHUNK) -> AsyncIterator[list[ClientRow]]:
    """Every row after client id ``after``, in chunks of ``chunk`` clients."""
    ids = [c for c in await candidates(redis, prefix, days, dim, segment) if c > after]
    for n in range(0, len(ids), chunk):
        yield await rows_of(redis, prefix, days, dim, ids[n:n + chunk])


async def client_page(redis: aioredis.Redis, prefix: str, days: Sequence[str], dim: str, segment: str | None,
                      after: str, limit: int) -> tuple[list[ClientRow], str | None]:
    """Up to ``limit`` rows after ``after`` and the last client id when more follow (else None)."""
    ids = [c for c in await candidates(redis, prefix, days, dim, segment) if c > after]
    rows = await rows_of(redis, prefix, days, dim, ids[:limit])
    return rows, (rows[-1].client_id if len(ids) > limit else None)


async def currencies(redis: aioredis.Redis, prefix: str) -> list[str]:
    """The currencies of the facts counted (``pcur``), sorted."""
    return sorted(text(m) for m in await redis.smembers(f"{prefix}pcur"))


Cells = dict[str, dict[str, list[int]]]  # dimension -> segment -> [cents, sales]

# ARGV: [1] prefix P [2] day [3..] dimensions. The day's cents and visits per client (pc:, pv:)
# added up by the segment each client holds now in each dimension. Returns flat triples:
# "<dimension> <segment>", cents, sales (a client with no segment in a dimension: in none).
CURRENT_DAY = """
local p, day = ARGV[1], ARGV[2]
local dims = {}
for i = 3, #ARGV do dims[#dims + 1] = ARGV[i] end
if #dims == 0 then return {} end
local visits = {}
local v = redis.call('HGETALL', p .. 'pv:' .. day)
for j = 1, #v, 2 do visits[v[j]] = tonumber(v[j + 1]) end
local cells, order = {}, {}
local c = redis.call('HGETALL', p .. 'pc:' .. day)
for j = 1, #c, 2 do
  local segs = redis.call('HMGET', p .. 'c:' .. c[j], unpack(dims))
  for k = 1, #dims do
    if segs[k] then
      local key = dims[k] .. ' ' .. segs[k]
      local cell = cells[key]
      if not cell then
        cell = {0, 0}
        cells[key] = cell
        order[#order + 1] = key
      end
      cell[1] = cell[1] + tonumber(c[j + 1])
      cell[2] = cell[2] + (visits[c[j]] or 0)
    end
  end
end
local out = {}
for _, key in ipairs(order) do
  out[#out + 1], out[#out + 2], out[#out + 3] = key, cells[key][1], cells[key][2]
end
return out
"""


class Current:
    """Revenue and sales by the segment each client holds **now**, per day (``CURRENT_DAY``: one
    script call per day, bounded by that day's clients), each day read once per request."""

    def __init__(self, redis: aioredis.Redis, prefix: str, dims: Sequence[str]) -> None:
        self.redis, self.prefix, self.dims = redis, prefix, sorted(dims)
        self.by_day: dict[str, Cells] = {}

    async def cells(self, days: Sequence[str]) -> Cells:
        """The figures of ``days`` added up."""
        script = self.redis.register_script(CURRENT_DAY)
        for d in dict.fromkeys(days):
            if d not in self.by_day:  # one call at a time: other clients' commands run in between
                flat = await script(args=[self.prefix, d, *self.dims])
                cells: Cells = {}
                for i in range(0, len(flat), 3):
                    dim, _, seg = text(flat[i]).partition(" ")
                    cells.setdefault(dim, {})[seg] = [int(flat[i + 1]), int(flat[i + 2])]
                self.by_day[d] = cells
        out: Cells = {}
        for d in days:
            for dim, segs in self.by_day[d].items():
                for seg, (c, s) in segs.items():
                    cell = out.setdefault(dim, {}).setdefault(seg, [0, 0])
                    cell[0] += c
                    cell[1] += s
        return out
