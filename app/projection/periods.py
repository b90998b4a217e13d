"""Period reports in the projection: revenue by segment and KPIs for any day, week or month.

Source: the receipt facts (``loyalty.receipt-facts``, one per applied receipt: its instant,
signed net amount and the client's segments right after it was evaluated;
:func:`rules.events.receipt_fact`). The projector counts each fact once, by receipt id
(``COUNT``), into the business day of its instant, so a redelivered fact counts nothing and
a late receipt lands in its own day, not in the day it arrived.

Keys, under the generation prefix ``P``:

    P pd:<YYYY-MM-DD>     hash: rev (net cents), sales, returns, and per dimension and
                          segment rev:<d>:<seg> and sales:<d>:<seg>
    P pa:<YYYY-MM-DD>     set of the clients with a sale that day
    P pc:<YYYY-MM-DD>     hash client -> its net cents that day (every client with a receipt)
    P pv:<YYYY-MM-DD>     hash client -> its visits that day (sale receipts; none: no field)
    P pseen:<YYYY-MM-DD>  set of the receipt ids counted that day (deduplication)
    P pfirst              hash client -> epoch second of its earliest sale seen
    P pdays               zset of the days with facts (score YYYYMMDD)
    P pcur                set of the currencies of the facts counted

Definitions (period = [from, to) in business days; weeks start on Monday):

* ``revenue``: net revenue (sales less returns) of the receipts dated in the period;
  ``revenue_by_segment``: the same, each receipt attributed to the segment its client was in
  right after the receipt was evaluated (a return to the client's segment at the return);
* ``sales``: sale receipts; ``active``: distinct clients with a sale; ``new``: active
  clients whose earliest sale is in the period; ``returning``: active - new;
  ``avg_check``: net revenue / sales; ``sales_per_client``: sales / active;
* ``churned``: with ``churn`` (``dimension:segment,segment``): the changes into those
  segments in the period (the projection's transitions per day);
* with ``attribution="current"``, ``revenue_by_segment`` puts each client's net revenue and
  sales of the period in the segment it holds **now** (``c:<client>``), read from ``pc:``/``pv:``
  (:mod:`app.projection.period_clients`); a client with no segment in a dimension now is in
  none of its segments.

Per client (``pc:``/``pv:``, :mod:`app.projection.period_clients`): revenue = net cents of its
receipts dated in the period (returns included), visits = its sale receipts in the period.

Memory (``bench/bench_reports.py``, 100k clients): ~49 bytes per receipt id in ``pseen``,
~50 per client-day in ``pa``, ~58 in each of ``pc`` and ``pv``; a year of 100k receipts a day
holds ~7.8 GB. Counting a fact costs Redis ~19.5 us (14.9 without ``pc``/``pv``). The
rebuild keeps the days older than the facts topic (:mod:`app.projection.period_copy`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.projection.period_clients import Current
from app.projection.store import cents, money, text
from rules.calendar import BusinessCalendar, to_epoch

PERIODS = ("day", "week", "month")
ATTRIBUTIONS = ("purchase", "current")

# KEYS: none. ARGV: [1] prefix [2] day [3] receipt id [4] client [5] cents [6] sale 1/0
# [7] epoch [8] score YYYYMMDD [9] currency ("" unknown) [10..] dimension, segment pairs.
# Returns 1 counted, 0 seen.
COUNT = """
local p, day = ARGV[1], ARGV[2]
if redis.call('SADD', p .. 'pseen:' .. day, ARGV[3]) == 0 then return 0 end
local h = p .. 'pd:' .. day
local amount = tonumber(ARGV[5])
redis.call('HINCRBY', h, 'rev', amount)
redis.call('HINCRBY', p .. 'pc:' .. day, ARGV[4], ARGV[5])
redis.call('ZADD', p .. 'pdays', tonumber(ARGV[8]), day)
if ARGV[9] ~= '' then redis.call('SADD', p .. 'pcur', ARGV[9]) end
if ARGV[6] == '1' then
  redis.call('HINCRBY', h, 'sales', 1)
  redis.call('SADD', p .. 'pa:' .. day, ARGV[4])
  redis.call('HINCRBY', p .. 'pv:' .. day, ARGV[4], 1)
  local first = redis.call('HGET', p .. 'pfirst', ARGV[4])
  if not first or tonumber(first) > tonumber(ARGV[7]) then
    redis.call('HSET', p .. 'pfirst', ARGV[4], ARGV[7])
  end
else
  redis.call('HINCRBY', h, 'returns', 1)
end
for i = 10, #ARGV, 2 do
  local k = ARGV[i] .. ':' .. ARGV[i + 1]
  redis.call('HINCRBY', h, 'rev:' .. k, amount)
  if ARGV[6] == '1' then redis.call('HINCRBY', h, 'sales:' .. k, 1) end
end
return 1
"""
DAY_KEYS = ("pd", "pa", "pc", "pv", "pseen")  # the keys of one day (<kind>:<YYYY-MM-DD>)


@dataclass(frozen=True)
class Fact:
    receipt_id: str
    client_id: str
    at: int
    sale: bool
    cents: int
    segments: tuple[tuple[str, str], ...]
    currency: str = ""


def facts(values: Iterable[bytes | None]) -> list[Fact]:
    """Decode receipt facts (values that are not facts are skipped)."""
    from datetime import datetime

    out = []
    for raw in values:
        try:
            doc = orjson.loads(raw or b"")
            amount = cents(doc["amount"])
            at = to_epoch(datetime.fromisoformat(doc["time"]))
            segs = tuple(sorted((str(d), str(s)) for d, s in doc["segments"].items()))
            if amount is None:
                continue
            out.append(Fact(str(doc["receipt_id"]), str(doc["client_id"]), at, doc["type"] == "sale",
                            amount, segs, str(doc.get("currency") or "")[:8]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


async def count(redis: aioredis.Redis, prefix: str, rows: Sequence[Fact], cal: BusinessCalendar) -> int:
    """Count facts once each; returns how many were new."""
    if not rows:
        return 0
    script = redis.register_script(COUNT)  # EVALSHA: the script's text is not sent per fact
    pipe = redis.pipeline(transaction=False)
    for f in rows:
        day = day_of(cal, f.at)
        pairs = [x for seg in f.segments for x in seg]
        await script(args=[prefix, day, f.receipt_id, f.client_id, f.cents, int(f.sale), f.at,
                           day.replace("-", ""), f.currency, *pairs], client=pipe)
    return sum(int(n) for n in await pipe.execute())


def day_of(cal: BusinessCalendar, t: int) -> str:
    """The business day (YYYY-MM-DD) of epoch second ``t``."""
    return date.fromordinal(cal.day(t) + date(1970, 1, 1).toordinal()).isoformat()


def periods(start: date, end: date, period: str) -> list[tuple[date, date]]:
    """[from, to) spans of ``period`` covering the days start..end-1 (aligned: weeks start on
    Monday, months on the 1st)."""
    spans = []
    d = _align(start, period)
    while d < end:
        nxt = _next(d, period)
        spans.append((d, nxt))
        d = nxt
    return spans


def _align(d: date, period: str) -> date:
    if period == "week":
        return d - timedelta(days=d.weekday())
    if period == "month":
        return d.replace(day=1)
    return d


def _next(d: date, period: str) -> date:
    if period == "day":
        return d + timedelta(days=1)
    if period == "week":
        return d + timedelta(days=7)
    return (d.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous(span: tuple[date, date], period: str) -> tuple[date, date]:
    start = span[0]
    if period == "month":
        prev = (start - timedelta(days=1)).replace(day=1)
        return prev, start
    return start - (span[1] - span[0]), start


@dataclass
class Figures:
    revenue: int = 0
    sales: int = 0
    returns: int = 0
    active: int = 0
    new: int = 0
    churned: int | None = None
    by_segment: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # dim -> seg -> [rev, sales]

    def as_dict(self) -> dict[str, Any]:
        return {
            "revenue": money(self.revenue), "sales": self.sales, "returns": self.returns,
            "active": self.active, "new": self.new, "returning": self.active - self.new,
            "avg_check": money(round(self.revenue / self.sales)) if self.sales else None,
            "sales_per_client": round(self.sales / self.active, 4) if self.active else None,
            "churned": self.churned,
            "revenue_by_segment": {d: {s: {"revenue": money(v[0]), "sales": v[1]} for s, v in sorted(segs.items())}
                                   for d, segs in sorted(self.by_segment.items())},
        }


async def figures(redis: aioredis.Redis, prefix: str, span: tuple[date, date], cal: BusinessCalendar,
                  churn: tuple[str, tuple[str, ...]] | None = None, current: Current | None = None) -> Figures:
    """The figures of the days in [span[0], span[1]); with ``current``, revenue by segment by
    the clients' current segments (the ``current`` attribution)."""
    days = day_labels(span)
    out = Figures()
    pipe = redis.pipeline(transaction=False)
    for d in days:
        pipe.hgetall(f"{prefix}pd:{d}")
    for raw in await pipe.execute():
        for k, v in raw.items():
            key, n = text(k), int(v)
            if key == "rev":
                out.revenue += n
            elif key in ("sales", "returns"):
                setattr(out, key, getattr(out, key) + n)
            else:
                kind, dim, seg = key.split(":", 2)
                cell = out.by_segment.setdefault(dim, {}).setdefault(seg, [0, 0])
                cell[0 if kind == "rev" else 1] += n
    if current is not None:
        out.by_segment = await current.cells(days)
    active = {text(m) for m in (await redis.sunion([f"{prefix}pa:{d}" for d in days]) if days else [])}
    out.active = len(active)
    if active:
        ids = sorted(active)
        firsts = await redis.hmget(f"{prefix}pfirst", ids)
        lo = to_epoch_day(cal, span[0])
        hi = to_epoch_day(cal, span[1])
        out.new = sum(1 for f in firsts if f is not None and lo <= int(f) < hi)
    if churn is not None:
        dim, segs = churn
        pipe = redis.pipeline(transaction=False)
        for d in days:
            pipe.hgetall(f"{prefix}tr:{dim}:{d}")
        out.churned = sum(int(v) for raw in await pipe.execute() for k, v in raw.items()
                          if text(k).split(">", 1)[-1] in segs)
    return out


def to_epoch_day(cal: BusinessCalendar, d: date) -> int:
    """Epoch second at which business day ``d`` starts."""
    return cal.day_start(d.toordinal() - date(1970, 1, 1).toordinal())


def day_labels(span: tuple[date, date]) -> list[str]:
    """The days of [span[0], span[1]) as YYYY-MM-DD."""
    return [(span[0] + timedelta(days=i)).isoformat() for i in range((span[1] - span[0]).days)]


async def report(redis: aioredis.Redis, prefix: str, start: date, end: date, period: str,
                 cal: BusinessCalendar, churn: tuple[str, tuple[str, ...]] | None = None,
                 attribution: str = "purchase", spans: Sequence[tuple[date, date]] | None = None
                 ) -> list[dict[str, Any]]:
    """Per period in [start, end) (or per span of ``spans``, periods of it): its figures and the
    previous period's beside them. ``attribution``: ``purchase`` (revenue by the segment at
    each receipt) or ``current`` (by each client's segment now)."""
    return [row async for row in iter_report(redis, prefix, start, end, period, cal, churn, attribution, spans)]


async def iter_report(redis: aioredis.Redis, prefix: str, start: date, end: date, period: str,
                      cal: BusinessCalendar, churn: tuple[str, tuple[str, ...]] | None = None,
                      attribution: str = "purchase", spans: Sequence[tuple[date, date]] | None = None
                      ) -> AsyncIterator[dict[str, Any]]:
    """:func:`report` a period at a time (each day and period read once)."""
    if attribution not in ATTRIBUTIONS:
        raise ValueError(f"attribution: one of {', '.join(ATTRIBUTIONS)}")
    current = None
    if attribution == "current":
        current = Current(redis, prefix, sorted(text(d) for d in await redis.smembers(f"{prefix}dims")))
    kept: tuple[tuple[date, date], Figures] | None = None  # the last period: the next one's previous
    for span in periods(start, end, period) if spans is None else spans:
        prev = previous(span, period)
        if kept is not None and kept[0] == prev:
            before = kept[1]
        else:
            before = await figures(redis, prefix, prev, cal, churn, current)
        now = await figures(redis, prefix, span, cal, churn, current)
        kept = (span, now)
        yield {"period": span[0].isoformat(), "from": span[0].isoformat(), "to": span[1].isoformat(),
               **now.as_dict(), "previous": {"from": prev[0].isoformat(), "to": prev[1].isoformat(),
                                             **before.as_dict()}}
