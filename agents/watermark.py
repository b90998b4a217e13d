"""The inputs' event-time watermark: time-based changes never run ahead of the input.

A time-based change due at instant ``d`` (a client turning ``at_risk``) is right only if
every receipt of that client dated before ``d`` has been applied. A worker that is
running live while history is produced into it must therefore wait for the *event time*
of its inputs, not merely for "the consumer has caught up" (a backfill produced at 250/s
is caught up most of the time).

How it flows (as watermarks do in stream processors, in-band with the data):

* The routers track, per input partition (``pos.receipts``/``crm.client-profiles``), the
  newest event time routed so far and when a record last came.
* Every :data:`BEACON_S` seconds each worker sends a watermark record (kind ``W``) to every
  client-events partition: for each input partition it owns, the newest event time it has
  routed, or "idle" when the partition has been read to its end and nothing new has come
  for ``LOYALTY_WATERMARK_IDLE`` seconds. It is produced after the records it covers, so a
  client-events partition reads it after them.
* The clients agent keeps, per client-events partition, the latest mark of every input
  partition. The partition's watermark is the least of them; an idle input partition
  does not hold it back (it follows the clock), and one not heard of yet holds it.
* Ticks are due up to ``min(now, watermark - LOYALTY_ALLOWED_LATENESS)`` and carry that
  instant: the tick advances the client to it, never further (so a redelivered tick does
  the same thing). When every input partition is idle, ticks follow the clock, with no
  lateness: nothing is arriving to wait for. While records flow, the allowed lateness
  delays time-based changes by that much.

A receipt dated before the watermark (later than the allowed lateness) is still applied
and counted, like any late receipt: it is evaluated at the client's clock, and time-based
changes already published for instants after it are not taken back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

WATERMARK = b"W"
BEACON_S = 1.0  # seconds between watermark records
KEY = b"\x00watermark"
IDLE = None  # an input partition that follows the clock


def encode(marks: dict[str, int | None], counts: dict[str, int]) -> bytes:
    """A watermark record: ``marks`` ("topic:partition" -> newest event time routed, or
    None: idle) of the sender's input partitions; ``counts``: input topic -> partitions."""
    return WATERMARK + orjson.dumps({"m": marks, "n": counts})


def decode(value: bytes) -> tuple[dict[str, int | None], dict[str, int]]:
    doc = orjson.loads(value[1:])
    return doc["m"], doc["n"]


@dataclass
class Source:
    """The routers' side: per input partition, newest event time and last arrival."""

    newest: dict[str, int] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)

    def routed(self, tp: str, at: int | None) -> None:
        self.last_seen[tp] = time.monotonic()
        if at is not None and at > self.newest.get(tp, at - 1):
            self.newest[tp] = at

    def mark(self, tp: str, caught_up: bool, idle_s: float, now: float) -> int | bool | None:
        """The mark of ``tp``: its newest event time, IDLE (None), or False: nothing to say
        yet (not caught up and nothing routed since this worker got it)."""
        seen = self.last_seen.get(tp)
        if caught_up and (seen is None or now - seen >= idle_s):
            return IDLE
        newest = self.newest.get(tp)
        return False if newest is None else newest

    def forget(self, keep: set[str]) -> None:
        for tp in [tp for tp in self.last_seen if tp not in keep]:
            del self.last_seen[tp]
        for tp in [tp for tp in self.newest if tp not in keep]:
            del self.newest[tp]


@dataclass
class Sink:
    """The clients agent's side: per client-events partition, the marks received."""

    marks: dict[int, dict[str, int | None]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def received(self, partition: int, value: bytes) -> None:
        marks, counts = decode(value)
        self.counts.update(counts)
        mine = self.marks.setdefault(partition, {})
        for tp, mark in marks.items():
            old = mine.get(tp)
            # an event-time mark never goes back (a new owner may have routed less so far)
            mine[tp] = mark if mark is None or old is None else max(old, mark)

    def watermark(self, partition: int, now: int) -> int | None:
        """The least event-time mark of the input partitions that are not idle (``now``
        when every one is idle); None: some input partition has not been heard of yet."""
        if not self.counts:
            return None
        mine = self.marks.get(partition, {})
        low = None
        for topic, n in self.counts.items():
            for k in range(n):
                tp = f"{topic}:{k}"
                if tp not in mine:
                    return None
                mark = mine[tp]
                if mark is not None and (low is None or mark < low):
                    low = mark
        return now if low is None else low

    def until(self, partition: int, now: int, lateness: int) -> int | None:
        """Ticks of ``partition`` are due up to this instant (None: hold them): the least
        mark less the allowed lateness, never after ``now``. Idle input partitions follow
        the clock with no lateness (nothing is arriving to wait for)."""
        mark = self.watermark(partition, now)
        if mark is None:
            return None
        return now if mark >= now else min(now, mark - lateness)
