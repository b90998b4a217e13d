"""The Redis side of the membership-history questions: candidates from the indexes of
:mod:`app.projection.history` (never a scan of every client), their packed histories read in
pipelined chunks, the answers computed by :mod:`app.projection.history_queries`.

* ``was``: clients with an interval in ``X`` (dimension ``D``) during ``[start, end)`` and,
  optionally, in ``Y`` (dimension ``D2``) now. Candidates: ``hix:D:x`` scored after
  ``start`` (they left ``x`` after it, or are in it), intersected in Redis with the current
  members ``seg:D2:y`` when ``Y`` is given (ZINTER);
* ``entered``: stays in ``X`` begun in ``[start, end)``: candidates ``hix:D:x`` scored from
  ``start``;
* ``stays``: every client of ``hix:D:x`` (from ``start`` when given);
* ``cohorts``: ``hfirst:D`` scored in the cohort months.

Lists come in client-id order, paged by ``after`` (the last client id of the previous page:
a page is stable while the data changes, each page re-reads the candidate ids and the
histories of the ids after ``after`` until it is full).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from app.projection import history_queries as q
from app.projection.history import History, decode, field, first_key, index_key, names_key
from app.projection.store import Projection, text
from rules.calendar import iso

CHUNK = 1000


async def names(proj: Projection, prefix: str, dim: str) -> dict[str, str]:
    return {text(k): text(v) for k, v in (await proj.redis.hgetall(names_key(prefix, dim))).items()}


async def _scored(proj: Projection, keys: Sequence[str], low: float, exclusive: bool = False) -> list[str]:
    """The members of the zsets ``keys`` scored from ``low`` (after it: ``exclusive``), sorted."""
    pipe = proj.redis.pipeline(transaction=False)
    lo = f"({low}" if exclusive else str(low)
    for key in keys:
        pipe.zrangebyscore(key, lo, "+inf")
    return sorted({text(m) for rows in await pipe.execute() for m in rows})


# ARGV: [1] "P c:" [2] number of fields k [3 .. 2+k] the fields [3+k ..] client ids. Returns
# the k fields of each client back to back (false: absent). One command per chunk: through
# redis-py's pipeline, 100k HMGETs cost ~2 s of packing and parsing alone.
FETCH = """
local pre, k = ARGV[1], tonumber(ARGV[2])
local fields, out = {}, {}
for i = 1, k do fields[i] = ARGV[2 + i] end
for i = 3 + k, #ARGV do
  local row = redis.call('HMGET', pre .. ARGV[i], unpack(fields))
  for j = 1, k do out[#out + 1] = row[j] end
end
return out
"""


async def _histories(proj: Projection, prefix: str, dim: str, ids: Sequence[str], table: dict[str, str],
                     extra: Sequence[str] = ()) -> AsyncIterator[list[tuple[str, History | None, list[str | None]]]]:
    """Per chunk of ``ids``: (client, its history in ``dim`` or None, its ``extra`` fields)."""
    fetch = proj.redis.register_script(FETCH)
    fields = [field(dim), *extra]
    k = len(fields)
    for n in range(0, len(ids), CHUNK):
        chunk = ids[n:n + CHUNK]
        flat = await fetch(args=[f"{prefix}c:", k, *fields, *chunk])
        yield [(cid, decode(flat[i * k], table) if flat[i * k] else None,
                [text(v) if v is not None else None for v in flat[i * k + 1:i * k + k]])
               for i, cid in enumerate(chunk)]


async def _page(rows: AsyncGenerator[dict[str, Any], None],
                limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` rows and the cursor of the next page (None: this is the last)."""
    out: list[dict[str, Any]] = []
    try:
        async for row in rows:
            if len(out) == limit:
                return out, out[-1]["client_id"]
            out.append(row)
        return out, None
    finally:
        await rows.aclose()


def _interval(iv: Any) -> dict[str, Any]:
    return {"segment": iv.segment, "entered": iso(iv.entered), "left": None if iv.left is None else iso(iv.left)}


async def iter_was(proj: Projection, dim: str, segments: frozenset[str], start: int, end: int,
                   now_dim: str | None = None, now: frozenset[str] = frozenset(),
                   after: str = "") -> AsyncGenerator[dict[str, Any], None]:
    """Clients in ``segments`` at some time of ``[start, end)`` (and in ``now`` of ``now_dim``
    now, when given), in client-id order after ``after``."""
    p = await proj.prefix_now()
    table = await names(proj, p, dim)
    nd = now_dim or dim
    if now:
        pipe = proj.redis.pipeline(transaction=False)
        for x in sorted(segments):
            for y in sorted(now):
                pipe.zinter({index_key(p, dim, x): 1, f"{p}seg:{nd}:{y}": 0}, withscores=True)
        ids = sorted({text(m) for rows in await pipe.execute() for m, score in rows if score > start})
    else:
        ids = await _scored(proj, [index_key(p, dim, x) for x in sorted(segments)], start, exclusive=True)
    ids = [c for c in ids if c > after]
    async for chunk in _histories(proj, p, dim, ids, table, (nd, f"{nd}:since")):
        for cid, h, (cur, since) in chunk:
            if h is None or (now and cur not in now):
                continue
            hits = q.was_in(h, segments, start, end)
            if hits:
                yield {"client_id": cid, "intervals": [_interval(iv) for iv in hits],
                       "now": {"dimension": nd, "segment": cur, "since": iso(int(since)) if since else None}}


async def iter_entered(proj: Projection, dim: str, segments: frozenset[str], start: int, end: int,
                       after: str = "") -> AsyncGenerator[dict[str, Any], None]:
    """Clients who began a stay in ``segments`` in ``[start, end)``, with the instants."""
    p = await proj.prefix_now()
    table = await names(proj, p, dim)
    ids = [c for c in await _scored(proj, [index_key(p, dim, x) for x in sorted(segments)], start) if c > after]
    async for chunk in _histories(proj, p, dim, ids, table):
        for cid, h, _ in chunk:
            times = q.entries(h, segments, start, end) if h is not None else []
            if times:
                yield {"client_id": cid, "entered": [iso(t) for t in times]}


async def was_page(proj: Projection, dim: str, segments: frozenset[str], start: int, end: int,
                   now_dim: str | None, now: frozenset[str], after: str,
                   limit: int) -> tuple[list[dict[str, Any]], str | None]:
    return await _page(iter_was(proj, dim, segments, start, end, now_dim, now, after), limit)


async def entered_page(proj: Projection, dim: str, segments: frozenset[str], start: int, end: int,
                       after: str, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    return await _page(iter_entered(proj, dim, segments, start, end, after), limit)


async def stays(proj: Projection, dim: str, segments: frozenset[str], now: int, start: int | None = None,
                end: int | None = None) -> dict[str, Any]:
    """How long stays in ``segments`` last: completed and ongoing (as of ``now``)."""
    p = await proj.prefix_now()
    table = await names(proj, p, dim)
    ids = await _scored(proj, [index_key(p, dim, x) for x in sorted(segments)],
                        start if start is not None else float("-inf"))
    done: list[int] = []
    going: list[int] = []
    clients = 0
    async for chunk in _histories(proj, p, dim, ids, table):
        for _, h, _ in chunk:
            if h is not None:
                d, g = q.stay_lengths(h, segments, now, start, end)
                done += d
                going += g
                clients += bool(d or g)
    return {"clients": clients, "completed": q.summary(done), "ongoing": q.summary(going)}


async def cohorts(proj: Projection, dim: str, active: frozenset[str], first_month: int, last_month: int,
                  horizon: int, now: int) -> list[dict[str, Any]]:
    """The cohort table of :func:`app.projection.history_queries.cohorts` from Redis."""
    p = await proj.prefix_now()
    table = await names(proj, p, dim)
    cal = proj.days.cal
    lo, hi = cal.month_start(first_month), cal.month_start(last_month + 1)
    ids = sorted(text(m) for m in await proj.redis.zrangebyscore(first_key(p, dim), lo, f"({hi}"))
    tables = [q.cohorts([], active, first_month, last_month, horizon, now, cal)]
    async for chunk in _histories(proj, p, dim, ids, table):  # chunk by chunk: the event loop breathes
        tables.append(q.cohorts([h for _, h, _ in chunk if h is not None], active, first_month, last_month,
                                horizon, now, cal))
    return q.merge_cohorts(tables)


async def segments_seen(proj: Projection, dim: str) -> list[str]:
    """The segments the history of ``dim`` knows (every segment ever entered)."""
    table = await names(proj, await proj.prefix_now(), dim)
    return [table[c] for c in sorted(table, key=lambda c: int(c, 36))]
