"""Contiguous delivery per partition, whatever the consumer dropped on the way.

faust-streaming 0.15.3 drops fetched records in several places: a rebalance clears the
agents' queues, and ``Consumer.getmany`` discards records of partitions that are not active
yet, or when the flow stops or the generation changes. It relies on a later seek to the
committed offset to fetch them again. When that seek comes first (seen after a SIGKILL
restart: the worker resumed its flow before it sought, and one partition's first delivered
record was 109 records past its committed offset), the agent's next record comes after a
gap and Faust's next commit covers records that no agent saw: lost receipts and changes.

:class:`OffsetGuard` checks each record an agent gets against the next offset expected for
its partition (after a start: the committed offset). A record past it means records were
skipped: the agent seeks back, drops the records still queued (their offsets keep rising)
until the re-fetch begins, and goes on from there. Faust acks the dropped records like any
other, so commits of that partition are held (:func:`app.faust_patches.hold_commits`) until
the re-fetch has passed the last dropped offset: a crash meanwhile re-delivers them.

Internal topics (client events, changes) have no gaps of their own in at-least-once mode.
An external input written by a transactional producer has one offset per commit marker, so
for those a gap of ``min_gap - 1`` offsets is accepted as is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from app import faust_patches

log = logging.getLogger("loyalty.offsets")


class OffsetGuard:
    def __init__(self, name: str, give_up_after: int = 100_000, min_gap: int = 1,
                 on_gap: Callable[[Any, int], None] | None = None) -> None:
        self.name = name
        self.on_gap = on_gap  # (tp, number of skipped records), e.g. a metric
        self.next: dict[Any, int] = {}
        self.rewinding: dict[Any, list[int]] = {}  # tp -> [seek offset, last dropped, dropped]
        self.held: dict[Any, int] = {}  # tp -> last dropped offset (commits held until past it)
        self.give_up_after = give_up_after
        self.min_gap = min_gap

    def check(self, tp: Any, offset: int, committed: int | None) -> tuple[str, int]:
        """("process", 0), ("drop", 0) or ("seek", offset to seek to)."""
        rewind = self.rewinding.get(tp)
        if rewind is not None:
            want, last, dropped = rewind
            if want < offset and last < offset and dropped < self.give_up_after:
                rewind[1:] = [offset, dropped + 1]
                self._hold(tp, offset)
                return "drop", 0
            del self.rewinding[tp]  # the re-fetch has begun (or it is a real gap after all)
            if offset > want:
                self._release(tp)
        else:
            want = self.next.get(tp, committed if committed is not None else offset)
            if offset >= want + self.min_gap and (committed or 0) < offset:
                self.rewinding[tp] = [want, offset, 0]
                self._hold(tp, offset)
                return "seek", want
        held = self.held.get(tp)
        if held is not None and offset > held:  # the re-fetched records are processed and acked
            self._release(tp)
        self.next[tp] = offset + 1
        return "process", 0

    def _hold(self, tp: Any, last_dropped: int) -> None:
        self.held[tp] = last_dropped
        faust_patches.hold_commits(id(self), tp)

    def _release(self, tp: Any) -> None:
        self.held.pop(tp, None)
        faust_patches.release_commits(id(self), tp)

    async def guard(self, app: Any, message: Any) -> bool:
        """True if the agent should process ``message``; seeks back over a gap."""
        tp = message.tp
        committed = getattr(app.consumer, "_committed_offset", {}).get(tp)
        verdict, offset = self.check(tp, message.offset, committed)
        if verdict == "seek":
            if self.on_gap is not None:
                self.on_gap(tp, message.offset - offset)
            log.error("%s: records %d..%d of %s[%d] were skipped by the consumer; seeking back",
                      self.name, offset, message.offset - 1, tp.topic, tp.partition)
            try:
                await app.consumer.seek(tp, offset)
            except Exception as exc:  # revoked meanwhile: its new owner starts at the commit
                log.warning("%s: seek of %s[%d] failed: %r", self.name, tp.topic, tp.partition, exc)
                self.rewinding.pop(tp, None)
                self._release(tp)
        return verdict == "process"
