"""What the agents need to handle messages in batches (``stream.take_events``).

An agent that waits for the broker's ack of its output before writing its table pays one
round trip per message; batched, it pays one per batch. Two pieces make that work in
Faust: :func:`in_event` (table operations of each message in the context of its own
event) and :func:`send` (produce without Faust's per-message channel machinery).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

from faust.streams import _current_event
from faust.types import TP

from agents.due_index import partitioned


@contextlib.contextmanager
def in_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event: table reads and writes use its partition.

    Faust picks a table key's store and changelog partition from the current event. Inside
    ``take_events`` that is not the event being handled, so every table operation of a
    batch runs in the context of its own event.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def send(app: Any, direct: bool, event: Any, topic: Any, name: str, key: bytes, value: bytes) -> Any:
    """Produce one message caused by ``event``; returns the future of the broker's ack.

    ``direct`` (at-least-once delivery) goes to Faust's producer: ``Topic.send`` costs
    several times more per message (channel, sensors, future wrappers), which was a fifth
    of the worker's CPU here. Otherwise ``Topic.send`` runs in the context of ``event``,
    whose partition picks Faust's transactional producer under exactly-once.
    """
    if direct:
        return await app.producer.send(name, key, value, None, None, None)
    with in_event(event):
        return await topic.send(key=key, value=value)


class ClientTable:
    """Reads and writes of the clients table by the clients agent, in batches.

    Faust's ``table[key] = value`` sends the changelog record through its producer buffer
    (a future, a callback and a RocksDB write of the persisted offset per record): with
    one produce per event, that capped a trivial agent at ~3,500 events/s here, against
    ~8,000 written directly. ``direct`` (at-least-once, RocksDB store) does what Faust
    does, without the per-record machinery: the value goes to the partition's database,
    the changelog record to the producer, and once acked the highest offset of each
    partition becomes the database's persisted offset (where recovery resumes). Faust
    flushes the producer before it commits input offsets, so every changelog record of
    a committed event has been acked. Otherwise (exactly-once: the changelog must go
    through the transactional producer; the memory store) Faust's table API is used.
    """

    def __init__(self, app: Any, table: Any, direct: bool) -> None:
        self.app = app
        self.table = table
        self.store = table.data
        self.direct = direct and partitioned(table)
        self.changelog = table.changelog_topic.get_topic_name() if self.direct else ""
        self._unacked: list[tuple[int, bytes, bytes, Any]] = []  # (partition, key, value, ack future)

    def get(self, event: Any, key: bytes) -> bytes | None:
        """The stored value of ``key`` in the partition of ``event``."""
        if self.direct:
            value: bytes | None = self.store._db_for_partition(event.message.partition).get(key)
            return value
        with in_event(event):
            return self.table.get(key)  # type: ignore[no-any-return]

    async def set(self, event: Any, key: bytes, value: bytes) -> None:
        if not self.direct:
            with in_event(event):
                self.table[key] = value
            return
        partition = event.message.partition
        self.store._db_for_partition(partition).put(key, value)
        ack = await self.app.producer.send(self.changelog, key, value, partition, None, None)
        self._unacked.append((partition, key, value, ack))

    async def settle(self) -> None:
        """Record the persisted offsets of the changelog records acked so far.

        A changelog record whose send failed is sent again (the database already holds it;
        the changelog must not stay behind it); if that send raises, the error propagates
        and the record is kept for the next call (:class:`agents.failsafe.Guard` retries).
        A partition revoked meanwhile is skipped: Faust dropped its database, and a missing
        persisted offset only makes a later recovery read more of the changelog.
        """
        if not self._unacked:
            return
        highest: dict[int, int] = {}
        waiting: list[tuple[int, bytes, bytes, Any]] = []
        failed: list[tuple[int, bytes, bytes, Any]] = []
        for entry in self._unacked:
            ack = entry[3]
            if not ack.done():
                waiting.append(entry)
            elif ack.cancelled() or ack.exception() is not None:
                failed.append(entry)
            else:
                partition, offset = entry[0], ack.result().offset
                if offset > highest.get(partition, -1):
                    highest[partition] = offset
        self._unacked = waiting + failed
        open_dbs = self.store._dbs
        for partition, offset in highest.items():
            if partition in open_dbs:  # not revoked meanwhile (Faust drops revoked databases)
                self.store.set_persisted_offset(TP(self.changelog, partition), offset)
        for entry in failed:
            partition, key, value, _ = entry
            ack = await self.app.producer.send(self.changelog, key, value, partition, None, None)
            self._unacked.remove(entry)
            self._unacked.append((partition, key, value, ack))
