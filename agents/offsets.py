"""Contiguous delivery per partition, whatever the Faust consumer skipped on the way.

faust-streaming 0.15.3 skips fetched records in several places and relies on a seek to the
committed offset after each rebalance to fetch them again: a rebalance clears the agents'
queues; ``Consumer.getmany`` discards records of partitions not active yet, or when the
flow stops or the generation changes; a stream acks, without processing it, a message it
takes while the flow is stopped, and ``wait_empty`` commits during the rebalance. When the
commit or the seek comes in the wrong order, the next record an agent gets is past a gap
and the skipped records are never processed. Seen after SIGKILL restarts: a restarted
worker's first record of a partition 109 past its committed offset, 825 of 25,302 changes
missing; 14-15 receipts of two partitions skipped in another run.

:class:`GapFiller` checks each record an agent gets against the next offset expected for
its partition (the committed offset when the partition was assigned to this worker). On a
gap it fetches the skipped records itself, with a plain aiokafka consumer, and hands them to
the agent before the record that revealed the gap, in offset order. The partition's commits
are held meanwhile (:func:`app.stream.faust_patches.hold_commits`); afterwards the range is marked
done in Faust's consumer, so commits go on past it. Seeking Faust's consumer back instead
raced with its read-offset bookkeeping and lost the rest of a partition.

Internal topics (client events, changes) have no gaps of their own in at-least-once mode.
An external input written by a transactional producer has one offset per commit marker, so
there a gap smaller than ``min_gap`` is accepted as is. A partition that left this worker
and came back is checked against the new committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from faust.types import TP

from app.stream import faust_patches

log = logging.getLogger("loyalty.offsets")

Fetch = Callable[[str, int, int, int], Awaitable[list[Any]]]  # topic, partition, start, end


@dataclass(frozen=True)
class FetchedMessage:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass(frozen=True)
class Fetched:
    """A record fetched past Faust, shaped like the parts of a Faust event agents use."""

    key: bytes | None
    value: bytes
    message: FetchedMessage


class GapFiller:
    def __init__(self, name: str, fetch: Fetch, min_gap: int = 1,
                 on_gap: Callable[[Any, int], None] | None = None) -> None:
        self.name = name
        self.fetch = fetch
        self.min_gap = min_gap
        self.on_gap = on_gap  # (tp, number of skipped records), e.g. a metric
        self.next: dict[Any, int] = {}
        self.filling: dict[Any, tuple[int, int]] = {}  # tp -> [start, end) being filled

    def assigned(self, tps: Iterable[Any]) -> None:
        """The worker's new assignment: forget partitions it lost meanwhile."""
        keep = set(tps)
        for tp in [tp for tp in self.next if tp not in keep]:
            del self.next[tp]

    def gap(self, tp: Any, offset: int, committed: int | None) -> tuple[int, int] | None:
        """The skipped range [start, offset) before this record, or None."""
        want = self.next.get(tp, committed if committed is not None else offset)
        self.next[tp] = offset + 1
        if offset < want + self.min_gap:
            return None  # the expected record, a redelivery, or an accepted small gap
        return want, offset

    async def fill(self, app: Any, event: Any) -> list[Any]:
        """The records to process for ``event``: the skipped ones before it, then itself."""
        msg = event.message
        tp = msg.tp
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        found = self.gap(tp, msg.offset, committed)
        if found is None:
            return [event]
        start, end = found
        if self.on_gap is not None:
            self.on_gap(tp, end - start)
        log.error("%s: records %d..%d of %s[%d] were skipped by the consumer; fetching them",
                  self.name, start, end - 1, msg.topic, msg.partition)
        faust_patches.hold_commits(id(self), tp)
        self.filling[tp] = (start, end)
        try:
            records = await self.fetch(msg.topic, msg.partition, start, end)
        except BaseException:  # not filled: the same gap is found again on a retry
            self.next[tp] = start
            del self.filling[tp]
            faust_patches.release_commits(id(self), tp)
            raise
        return [*(Fetched(r.key, r.value, FetchedMessage(r.topic, r.partition, r.offset))
                  for r in records), event]

    async def done(self, app: Any) -> None:
        """After the records of :meth:`fill` are processed: let commits pass the ranges."""
        add_gap = getattr(app.consumer, "_add_gap", None)
        while self.filling:
            tp, (start, end) = self.filling.popitem()
            if add_gap is not None:
                await add_gap(tp, start, end - 1)  # Faust counts a gap's offsets as acked
            faust_patches.release_commits(id(self), tp)


def register_filler(app: Any, name: str, connection: dict[str, Any], metrics: Any, min_gap: int = 1) -> GapFiller:
    """A filler for one agent of ``app``, told about every new assignment; skipped records
    are counted in ``metrics.offset_gaps`` (app.metrics)."""
    from app.wire.kafka_io import fetch_range

    async def fetch(topic: str, partition: int, start: int, end: int) -> list[Any]:
        return await fetch_range(connection, topic, partition, start, end)

    def on_gap(tp: Any, n: int) -> None:
        metrics.offset_gaps.labels(tp.topic).inc(n)

    filler = GapFiller(name, fetch, min_gap, on_gap)

    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        filler.assigned(assigned)

    app.on_partitions_assigned.connect(on_assigned)
    return filler
