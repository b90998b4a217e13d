"""The due index: which clients of a partition have a time-based change due, in due order.

It is derived data. Every ``clients`` table value starts with the client's next-due
instant (:mod:`app.wire.codecs`), so the index is kept in memory and built from the table's
store, partition by partition, the first time the due timer needs it after a rebalance
(when Faust has finished recovering the tables). The clients agent updates it with every
value it writes. Nothing is written to Kafka for it: an earlier version kept the index as
a changelogged table, two changelog messages per receipt (delete the old entry, write the
new one), and removing them took a worker from 1,055 to ~1,600 receipts/s here.

Per partition: ``current`` (client key -> due instant) is the truth; a heap orders the
entries, with stale ones (the client's due has changed since) skipped when they surface
and the heap rebuilt when they outnumber the live ones. Finding what is due costs
O(k log n) for k due clients, whatever the population. Memory: roughly 200 bytes per
client with a due instant.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.wire.codecs import split_table_value, table_due, table_rules
from rules.record.state import is_aux_key

_FAUST_KEYS = b"__faust"  # Faust's own bookkeeping keys in a partition's RocksDB
SWEEP = 1  # the due instant of a client written under other rules: before any real one


@dataclass
class _Partition:
    generation: int
    current: dict[bytes, int] = field(default_factory=dict)
    heap: list[tuple[int, bytes]] = field(default_factory=list)


class DueIndex:
    """In-memory due index of the partitions this worker owns."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def built(self, partition: int, generation: int) -> bool:
        """True if ``partition`` was built in this rebalance generation."""
        part = self._parts.get(partition)
        return part is not None and part.generation == generation

    def build(self, partition: int, generation: int, dues: Iterable[tuple[bytes, int]]) -> int:
        """(Re)build a partition from (client key, due instant) pairs; returns the count."""
        part = _Partition(generation, dict(dues))
        part.heap = [(due, key) for key, due in part.current.items()]
        heapq.heapify(part.heap)
        self._parts[partition] = part
        return len(part.current)

    def set(self, partition: int, key: bytes, due: int | None) -> None:
        """Record a client's new next-due instant (None: nothing due)."""
        part = self._parts.get(partition)
        if part is None:
            return  # built from the store (which has this write) when first needed
        if due is None:
            part.current.pop(key, None)
            return
        if part.current.get(key) == due:
            return
        part.current[key] = due
        heapq.heappush(part.heap, (due, key))
        if len(part.heap) > 2 * len(part.current) + 1024:
            part.heap = [(d, k) for k, d in part.current.items()]
            heapq.heapify(part.heap)

    def due(self, partition: int, now: int, limit: int | None = None) -> list[tuple[int, bytes]]:
        """Entries of ``partition`` due at or before ``now``, in due order, at most
        ``limit`` of them. They stay in the index until the client's due changes (its
        tick was processed)."""
        part = self._parts.get(partition)
        if part is None:
            return []
        heap, current = part.heap, part.current
        out: list[tuple[int, bytes]] = []
        while heap and heap[0][0] <= now and (limit is None or len(out) < limit):
            due, key = heapq.heappop(heap)
            if current.get(key) == due and (not out or out[-1] != (due, key)):
                out.append((due, key))
        for entry in out:
            heapq.heappush(heap, entry)
        return out

    def retain(self, partitions: AbstractSet[int]) -> None:
        """Forget the partitions this worker no longer owns."""
        for partition in set(self._parts) - partitions:
            del self._parts[partition]

    def size(self, partition: int) -> int:
        part = self._parts.get(partition)
        return len(part.current) if part is not None else 0


def partitioned(table: Any) -> bool:
    """True if the table's store keeps one database per partition (RocksDB). The memory
    store (tests, development) has no partitions: its index is one, partition 0."""
    return hasattr(table.data, "_db_for_partition")


def stored_dues(table: Any, partition: int, rules: bytes | None = None,
                behind: int | None = None) -> Iterator[tuple[bytes, int]]:
    """(client key, due instant) of every client of ``partition`` that has one, read from
    the table's store (the memory store: every key, for partition 0 only).

    ``rules``: the current rules fingerprint. A client written under other rules is due
    at once (:data:`SWEEP`): its tick re-evaluates it under these rules, with or without
    a due instant of its own.

    ``behind``: the instant of the current population round (agents.population). A client
    last evaluated before it is due at it at the latest: its tick catches it up.
    """
    store = table.data
    if partitioned(table):
        items: Iterable[tuple[bytes, bytes]] = store._db_for_partition(partition).items()
    elif partition == 0:
        items = list(store.items())
    else:
        return
    for key, value in items:
        if key[:7] == _FAUST_KEYS or len(value) < 8 or is_aux_key(key):  # not a client's value
            continue
        if rules is not None:
            written = table_rules(value)
            if written is not None and written != rules:
                yield key, SWEEP
                continue
        due = table_due(value)
        if behind is not None and _population_of(value) < behind:
            due = min(due, behind) if due else behind
        if due:
            yield key, due


def _population_of(value: bytes) -> int:
    """The ``pop`` of a stored client record (rules.record.state serializes it as ``"o"``)."""
    try:
        pop = orjson.loads(split_table_value(value)[1]).get("o", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return int(pop)
