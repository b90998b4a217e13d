"""Population snapshots across workers: every worker applies the same snapshots, at the
same event-time instants, as ``loyalty replay`` takes them.

Rounds. Snapshots are taken in *rounds*, one per cadence instant ``P`` (``pending``):

1. **Hold.** While round ``P`` is open, a receipt or profile dated at or after ``P`` is not
   applied: the clients agent keeps it under the client's *held* key in the clients table
   (:func:`held_key`; durable through the changelog). So a partition's client records hold
   exactly the inputs before ``P``, as replay's do when it takes snapshot ``P``. Ticks are
   not sent past ``P`` either.
2. **Partial.** Once a client-events partition's event-time watermark (agents.watermark)
   passes ``P`` and the partition's clients have caught up with the previous round, the
   worker owning it scans the partition's records and publishes the partition's partial
   aggregate (:mod:`rules.population`) to the compacted population topic (key
   ``partial:<partition>``), with the earliest instant it still holds (``floor``).
3. **Merge.** Every worker reads the topic. When every partition's partial for ``P`` is
   there, the merge (order-free) gives the snapshot; the first worker to see it publishes
   the round (key ``round``: instant, next instant, values), and every worker applies it:
   rules read the new values; every client of its partitions is swept (a tick due at
   ``P``), which evaluates the client at ``P`` (cause ``population``) and releases the inputs
   it held that are dated before the next instant. A client touched before its sweep tick
   is caught up the same way first.
4. **Next.** The next round is the next cadence instant. Until the first purchase, rounds
   are empty: the next round is the cadence instant after the earliest input still held
   (or the watermark), so the first snapshot is at the first cadence instant after the
   first purchase, as in replay.

Restarts and takeovers read the topic from its start before processing any client event
(:attr:`Rounds.ready`): the rounds give every snapshot and the open round.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from rules import Engine
from rules import population as pop
from rules.metrics import MetricView
from rules.record.state import loads as load_state

HELD = b"\x00h"  # clients-table key prefix of a client's held inputs (NUL: no client id has it)
_HELD_ROW = struct.Struct(">qI")  # event time, length of the message
ROUND_KEY = b"round:"  # + the round's instant: compaction keeps every round (a redelivered
# input is evaluated against the snapshot of its own time, agents.population docstring)


def held_key(client_key: bytes) -> bytes:
    return HELD + client_key


def is_held_key(key: bytes) -> bool:
    return key[:2] == HELD


def held_pack(rows: list[tuple[int, bytes]]) -> bytes:
    """Held inputs (event time, client-events message) as one table value."""
    return b"".join(_HELD_ROW.pack(t, len(m)) + m for t, m in rows)


def held_unpack(value: bytes | None) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while value and pos < len(value):
        t, n = _HELD_ROW.unpack_from(value, pos)
        pos += _HELD_ROW.size
        out.append((t, value[pos:pos + n]))
        pos += n
    return out


def partial_doc(spec: pop.Spec, engine: Engine, instant: int, partition: int, partitions: int,
                items: Iterable[tuple[bytes, bytes]], watermark: int,
                record: Any) -> dict[str, Any]:
    """The partial aggregate of one partition at ``instant`` from its table items;
    ``record``: table value -> client record bytes (app.wire.codecs.split_table_value)."""
    agg = pop.initialize(spec)
    floor = watermark
    for key, value in items:
        if is_held_key(key):
            times = [t for t, _ in held_unpack(value)]
            if times:
                floor = min(floor, *times)
            continue
        if key[:1] == b"\x00" or key[:7] == b"__faust" or len(value) < 8:
            continue
        state = load_state(record(value))
        pop.update(spec, agg, MetricView(state, instant, engine.cal))
    return {"kind": "partial", "instant": instant, "partition": partition,
            "partitions": partitions, "agg": agg, "floor": floor}


@dataclass
class Rounds:
    """One worker's view of the rounds (no I/O: the pipeline feeds it the topic's records)."""

    engine: Engine
    cadence: str
    partitions: int
    pending: int  # the open round's instant
    last: int | None = None  # the instant of the last round applied
    # instant -> partition -> partial, for the open round and any later one (a worker
    # ahead may publish its next partial before the round record this one waits for)
    partials: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # read the topic to its end once
    published: set[tuple[int, int]] = field(default_factory=set)  # (instant, partition) sent
    rounds_seen: set[int] = field(default_factory=set)  # instants whose round record was read

    @classmethod
    def create(cls, engine: Engine, cadence: str, partitions: int, earliest: int) -> Rounds | None:
        """None when no loaded rule set reads the population."""
        if not engine.spec.stats:
            return None
        return cls(engine, cadence, partitions, pop.next_instant(earliest, cadence, engine.cal))

    @property
    def hold_from(self) -> int:
        """Inputs dated at or after this instant are held."""
        return self.pending

    def has_partial(self, partition: int) -> bool:
        return partition in self.partials.get(self.pending, {}) or (self.pending, partition) in self.published

    def receive(self, key: bytes | None, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A population-topic record. Returns the round to publish when this worker merged
        the open round first (None otherwise)."""
        return self.complete(self.merge()) if self.take(key, doc) else None

    def take(self, key: bytes | None, doc: dict[str, Any]) -> bool:
        """Keep a population-topic record; True when the open round has every partial and
        can be merged (:meth:`merge`, then :meth:`complete`: the worker runs the merge, which
        fits the predictive models, in a thread)."""
        if doc.get("kind") == "round":
            self.rounds_seen.add(doc["instant"])
            if doc["instant"] >= self.pending:
                self.apply(doc)
            return False
        if doc.get("kind") != "partial" or doc["instant"] < self.pending:
            return False
        self.partials.setdefault(doc["instant"], {})[doc["partition"]] = doc
        return len(self.partials.get(self.pending, {})) >= self.partitions

    def complete(self, done: dict[str, Any]) -> dict[str, Any] | None:
        """Apply a merged round; returns it when no round record of it was read yet."""
        self.apply(done)
        return done if done["instant"] not in self.rounds_seen else None

    def merge(self) -> dict[str, Any]:
        spec = self.engine.spec
        agg = pop.initialize(spec)
        parts = self.partials[self.pending]
        for k in sorted(parts):
            agg = pop.merge(spec, agg, parts[k]["agg"])
        instant = self.pending
        snap = pop.snapshot(spec, instant, agg)
        if snap is None:
            floor = min(p["floor"] for p in parts.values())
            after = max(instant, floor)
            return {"kind": "round", "instant": instant, "next": pop.next_instant(after, self.cadence, self.engine.cal),
                    "snapshot": None}
        return {"kind": "round", "instant": instant,
                "next": pop.next_instant(instant, self.cadence, self.engine.cal),
                "snapshot": {"values": snap.values, "clients": snap.clients, "version": snap.version}}

    def apply(self, doc: dict[str, Any]) -> None:
        body = doc.get("snapshot")
        if body is not None:
            self.engine.set_population(pop.Snapshot(doc["instant"], body["values"], body["clients"]))
        self.last = doc["instant"]
        self.pending = doc["next"]
        self.partials = {i: parts for i, parts in self.partials.items() if i >= self.pending}


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
