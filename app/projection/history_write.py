"""The writer side of the membership history in Python (the Lua is in
:mod:`app.projection.history`): the projection the projector and the rebuild write with
(:func:`writer_projection`, with ``LOYALTY_HISTORY_DAYS``), and the rebuild's copy of the
history older than the change topic (:func:`copy_older`; the ``tr:``/``snap:`` days:
:func:`copy_days`).

A rebuild replays the change topic into a new generation (:mod:`agents.projector`), which
rebuilds every history the topic still holds in full. A topic keeps its messages for its
retention only (Kafka's default: 7 days), so the rebuilt history of a client may start with
a change that has a ``from``: the segment before is known, its start is not. Before the
switch, :func:`copy_older` extends each such history back with the older intervals of the
previous generation (as ``tr:``/``snap:`` days are copied), translating segment codes,
applying the retention (``LOYALTY_HISTORY_DAYS``) and indexing the intervals it adds. A
history the topic holds from the first segmentation is left as rebuilt.
"""

from __future__ import annotations

from typing import Any

from app.projection.connect import projection_of
from app.projection.history import History, b36, decode, encode, extend, field, first_key, index_key, prune
from app.projection.history_reads import names
from app.projection.store import Projection, text
from app.settings import Settings

BATCH = 1000


def writer_projection(settings: Settings) -> Projection:
    """The projection with the settings' history retention (the projector's writer)."""
    proj = projection_of(settings)
    proj.history_days = settings.history_days
    return proj


async def copy_older(proj: Projection, old: str, new: str) -> int:
    """Extend the new generation's histories with the old one's older intervals; returns the
    histories written."""
    r = proj.redis
    po, pn = proj.prefix(old), proj.prefix(new)
    written = 0
    for dim in sorted(text(d) for d in await r.smembers(f"{po}dims")):
        old_names = await names(proj, po, dim)
        if not old_names:
            continue
        codes = {seg: code for code, seg in (await names(proj, pn, dim)).items()}
        keys: list[str] = []
        async for key in r.scan_iter(match=f"{po}c:*", count=BATCH):
            keys.append(text(key)[len(po) + 2:])
            if len(keys) >= BATCH:
                written += await _copy(proj, po, pn, dim, keys, old_names, codes)
                keys.clear()
        if keys:
            written += await _copy(proj, po, pn, dim, keys, old_names, codes)
    return written


async def _copy(proj: Projection, po: str, pn: str, dim: str, ids: list[str], old_names: dict[str, str],
                codes: dict[str, str]) -> int:
    r = proj.redis
    f = field(dim)
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hget(f"{po}c:{cid}", f)
        pipe.hmget(f"{pn}c:{cid}", [f, dim])
    rows = await pipe.execute()
    new_names = {code: seg for seg, code in codes.items()}
    out = r.pipeline(transaction=False)
    n = 0
    for cid, old_raw, (new_raw, current) in zip(ids, rows[::2], rows[1::2], strict=True):
        if old_raw is None or current is None:  # nothing to copy, or a client gone from the new generation
            continue
        merged = extend(decode(old_raw, old_names), decode(new_raw, new_names) if new_raw else None)
        if merged is None:
            continue
        merged = prune(merged, proj.history_days * 86_400)
        for seg in {merged.before, *merged.segments} - {""} - set(codes):
            codes[seg] = b36(len(codes) + 1)
            new_names[codes[seg]] = seg
            out.hset(f"{pn}hcode:{dim}", seg, codes[seg])
            out.hset(f"{pn}hname:{dim}", codes[seg], seg)
        out.hset(f"{pn}c:{cid}", f, encode(merged, codes))
        _index(out, pn, dim, cid, merged)
        n += 1
    await out.execute()
    return n


def _index(pipe: Any, prefix: str, dim: str, cid: str, h: History) -> None:
    """Index the client's intervals: each segment's latest exit (+inf while in it)."""
    scores: dict[str, float] = {}
    for iv in h.intervals:
        scores[iv.segment] = max(scores.get(iv.segment, 0.0), float("inf") if iv.left is None else float(iv.left))
    for seg, score in scores.items():
        pipe.zadd(index_key(prefix, dim, seg), {cid: score}, gt=True)
    if h.first is not None:
        pipe.zadd(first_key(prefix, dim), {cid: h.first}, nx=True)


async def copy_days(proj: Projection, old: str, new: str) -> int:
    """Copy ``tr:``/``snap:`` days of the old generation that the new one lacks."""
    redis, po, pn = proj.redis, proj.prefix(old), proj.prefix(new)
    copied = 0
    for dim_raw in await redis.smembers(f"{po}dims"):
        dim = text(dim_raw)
        for kind in ("tr", "snap"):
            have = {text(d) for d in await redis.zrange(f"{pn}{kind}days:{dim}", 0, -1)}
            days: list[tuple[Any, float]] = await redis.zrange(  # type: ignore[assignment]
                f"{po}{kind}days:{dim}", 0, -1, withscores=True)
            for day_raw, score in days:
                day = text(day_raw)
                if day in have:
                    continue
                row = await redis.hgetall(f"{po}{kind}:{dim}:{day}")
                if row:
                    await redis.hset(f"{pn}{kind}:{dim}:{day}",
                                     mapping={text(k): text(v) for k, v in row.items()})
                await redis.zadd(f"{pn}{kind}days:{dim}", {day: score})
                copied += 1
    return copied
