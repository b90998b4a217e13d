"""Membership history in the Redis projection: for each client and dimension, the intervals
spent in each segment (segment, entered at, left at or still open), packed in one field of
the client's hash, plus indexes so that queries read only the clients concerned.

Written by the projection's change script (``APPLY`` in :mod:`app.projection.scripts` calls
``history()`` below for every change event, in the same atomic Lua call), so the projector's
change path, ``loyalty projection rebuild`` (the change topic from its beginning) and the
tests all write it the same way. The queries are :mod:`app.projection.history_queries`
(pure) and :mod:`app.projection.history_reads` (Redis).

Keyspace (``P`` = ``loyalty:<app id>:<generation>:``, as in :mod:`app.projection.store`)::

    P c:<client> <d>:h     the packed history of the client in dimension <d> (below)
    P hcode:<d>            hash segment -> code (base 36, "1", "2", ... in order of first use)
    P hname:<d>            hash code -> segment (the same, reversed, for readers)
    P hix:<d>:<segment>    zset of the clients with an interval in the segment, scored by the
                           last time they left it (epoch s), +inf while they are in it
    P hfirst:<d>           zset of the clients, scored by the instant of their first segmentation
                           in <d> (their change with no ``from``: the cohorts' start)

Packed field: comma-separated base-36 tokens ``F,B,T1,C1,D2,C2,...,Dn,Cn``: ``F`` the instant
of the client's first segmentation (its change with no ``from``; kept when old intervals are
dropped; ``-``: unknown, the first change seen had a ``from``), ``B`` the code of the segment
held before the first kept interval ("0": none, the history is complete), then per interval its
segment's code ``Ci`` and its start: ``T1`` in epoch seconds, ``Di`` the seconds since the
start of the interval before. An interval ends where the next starts; the last is open.
Segment ids of any text fit (only codes are packed). Measured (a simulated year, 300 clients,
boostfeel): see docs/how-to/ask-who-was-where.md.

Ordering and idempotency, from the history itself (so a change is appended exactly once
whatever the projection's other fields say): a change at ``t`` is appended when ``t`` is
newer than the last interval's start; at the same second only when it continues the chain
(its ``from`` is the last segment) and that ``from>to`` was not appended at that second yet
(the intervals starting at ``t`` and the segment before each tell); never when ``to`` is the
last segment. So a redelivered change is a no-op and a stale one never rewrites newer
history. Rules identical to the segment's own (``<d>:v``/``<d>:vk``) on the change topic; in
addition, a change whose state a rebuild already took from the clients changelog is still
appended here.

Retention: when a change is appended, intervals that ended more than ``LOYALTY_HISTORY_DAYS``
before it (the client's latest change in the dimension) are dropped; a segment left with no
interval loses the client from its ``hix:`` index. Every question about the last
``LOYALTY_HISTORY_DAYS`` days before now is thus answered in full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

FIELD = "h"  # the hash field is "<dimension>:h"

# Lua, included in APPLY. keep: seconds of retention. Returns 1 appended, 0 not.
HISTORY = """
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function b36(n)
  if n <= 0 then return '0' end
  local s = ''
  while n > 0 do
    local r = n % 36
    s = string.sub(B36, r + 1, r + 1) .. s
    n = (n - r) / 36
  end
  return s
end

local function history(p, cid, ck, dim, from, to, t, keep)
  local hf, codes, names = dim .. ':h', p .. 'hcode:' .. dim, p .. 'hname:' .. dim
  local function code(seg)
    local c = redis.call('HGET', codes, seg)
    if not c then
      c = b36(redis.call('HLEN', codes) + 1)
      redis.call('HSET', codes, seg, c)
      redis.call('HSET', names, c, seg)
    end
    return c
  end
  local raw = redis.call('HGET', ck, hf)
  local first, before, segs, ts = '-', '0', {}, {}
  if raw then
    local tok, at = {}, 0
    for x in string.gmatch(raw, '[^,]+') do tok[#tok + 1] = x end
    first, before = tok[1], tok[2]
    for i = 3, #tok - 1, 2 do
      at = at + tonumber(tok[i], 36)
      ts[#ts + 1], segs[#segs + 1] = at, tok[i + 1]
    end
  end
  local n = #segs
  local tc = redis.call('HGET', codes, to)
  if n > 0 then
    if t < ts[n] or tc == segs[n] then return 0 end
    if t == ts[n] then
      local fc = '0'
      if from ~= '' then fc = redis.call('HGET', codes, from) end
      if fc ~= segs[n] then return 0 end
      for i = n, 1, -1 do
        if ts[i] ~= t then break end
        if (i > 1 and segs[i - 1] or before) == fc and segs[i] == tc then return 0 end
      end
    end
  end
  tc = code(to)
  if n > 0 then
    redis.call('ZADD', p .. 'hix:' .. dim .. ':' .. redis.call('HGET', names, segs[n]), t, cid)
  elseif from == '' then  -- the first segmentation
    first = b36(t)
    redis.call('ZADD', p .. 'hfirst:' .. dim, t, cid)
  else  -- the first change kept by the topic: what came before is unknown
    before = code(from)
  end
  redis.call('ZADD', p .. 'hix:' .. dim .. ':' .. to, '+inf', cid)
  n = n + 1
  segs[n], ts[n] = tc, t
  local cut, drop = t - keep, 0
  while drop < n - 1 and ts[drop + 2] < cut do drop = drop + 1 end
  if drop > 0 then
    local kept, gone = {}, {}
    for i = drop + 1, n do kept[segs[i]] = true end
    for i = 1, drop do
      local c = segs[i]
      if not kept[c] and not gone[c] then
        gone[c] = true
        redis.call('ZREM', p .. 'hix:' .. dim .. ':' .. redis.call('HGET', names, c), cid)
      end
    end
    before = segs[drop]
  end
  local out = {first, before, b36(ts[drop + 1]), segs[drop + 1]}
  for i = drop + 2, n do
    out[#out + 1] = b36(ts[i] - ts[i - 1])
    out[#out + 1] = segs[i]
  end
  redis.call('HSET', ck, hf, table.concat(out, ','))
  return 1
end
"""


class Interval(NamedTuple):
    """A stay in one segment: ``[entered, left)`` in epoch seconds; ``left`` None: ongoing."""

    segment: str
    entered: int
    left: int | None


@dataclass(frozen=True, slots=True)
class History:
    """One client's history in one dimension: the segments held, in order, and the instant
    each began (each ends where the next begins; the last is ongoing). Parallel tuples, not
    interval objects: a question over 100k clients decodes ~1.5M intervals.

    ``first``: the instant of its first segmentation in the dimension (None: unknown, the
    change topic no longer held it when the history was written); ``before``: the segment
    held before the first interval ("" none: the history is complete from the first
    segmentation; otherwise older intervals were dropped by retention or never seen)."""

    first: int | None
    before: str
    segments: tuple[str, ...]
    starts: tuple[int, ...]

    @classmethod
    def of(cls, first: int | None, before: str, intervals: Iterable[Interval]) -> History:
        ivs = list(intervals)
        return cls(first, before, tuple(iv.segment for iv in ivs), tuple(iv.entered for iv in ivs))

    @property
    def intervals(self) -> tuple[Interval, ...]:
        return tuple(map(Interval, self.segments, self.starts, [*self.starts[1:], None]))

    @property
    def complete(self) -> bool:
        return self.before == ""

    @property
    def current(self) -> str | None:
        return self.segments[-1] if self.segments else None


def decode(raw: str | bytes, names: dict[str, str]) -> History:
    """The packed field (see the module docstring); ``names``: code -> segment (``hname:``)."""
    tok = (raw.decode() if isinstance(raw, bytes) else raw).split(",")
    return History(None if tok[0] == "-" else int(tok[0], 36),
                   "" if tok[1] == "0" else names.get(tok[1], f"?{tok[1]}"),
                   tuple([names.get(c) or f"?{c}" for c in tok[3::2]]),
                   tuple(accumulate([int(x, 36) for x in tok[2::2]])))


def field(dim: str) -> str:
    return f"{dim}:{FIELD}"


def index_key(prefix: str, dim: str, segment: str) -> str:
    return f"{prefix}hix:{dim}:{segment}"


def first_key(prefix: str, dim: str) -> str:
    return f"{prefix}hfirst:{dim}"


def names_key(prefix: str, dim: str) -> str:
    return f"{prefix}hname:{dim}"


def b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def encode(h: History, codes: dict[str, str]) -> str:
    """The packed field of ``h``; ``codes``: segment -> code (``hcode:``)."""
    toks = ["-" if h.first is None else b36(h.first), codes[h.before] if h.before else "0"]
    prev: int | None = None
    for seg, t in zip(h.segments, h.starts, strict=True):
        toks += [b36(t if prev is None else t - prev), codes[seg]]
        prev = t
    return ",".join(toks)


def prune(h: History, keep: int) -> History:
    """``h`` without the intervals that ended more than ``keep`` seconds before its last
    interval began (the writer's rule)."""
    cut = h.starts[-1] - keep
    drop = 0
    while drop < len(h.starts) - 1 and h.starts[drop + 1] < cut:
        drop += 1
    if not drop:
        return h
    return History(h.first, h.segments[drop - 1], h.segments[drop:], h.starts[drop:])


def extend(older: History, newer: History | None) -> History | None:
    """``newer`` (rebuilt from the change topic) extended back with the intervals of
    ``older`` (the previous generation) that began before it; None: nothing to add."""
    if newer is None:
        return older
    if newer.before == "" or not newer.starts:  # complete from the first segmentation
        return None
    n = sum(1 for t in older.starts if t < newer.starts[0])  # older's intervals begun before
    if not n:
        return None
    if older.segments[n - 1] == newer.segments[0]:  # one stay across the seam
        return History(older.first, older.before, older.segments[:n] + newer.segments[1:],
                       older.starts[:n] + newer.starts[1:])
    return History(older.first, older.before, older.segments[:n] + newer.segments, older.starts[:n] + newer.starts)
