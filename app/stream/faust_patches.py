"""Patches for faust-streaming 0.15.3 with aiokafka 0.14.

**Seek after a rebalance (always on, a correctness fix).** On every rebalance Faust drops
the records queued for its agents and seeks each partition back to its committed offset.
aiokafka's ``seek_to_committed`` leaves the position alone when a partition has no
committed offset (or offset 0): the fetcher then goes on after the dropped records, and
Faust's next commit covers them although no agent saw them. That happens to partitions not
committed yet: a first deployment, or a worker killed before its first commit and
restarted (the restart rebalances again when the dead member's session expires). Seen as
lost changes after a SIGKILL restart. :func:`seek_to_committed_or_beginning` seeks such
partitions to the beginning (the app's ``auto_offset_reset`` is ``earliest``), so their
records are delivered again; processing is idempotent.

**Commit holds (always on).** :func:`hold_commits` keeps Faust from committing a partition
while :class:`agents.offsets.GapFiller` processes records the consumer skipped in it (Faust
may already have acked them, unprocessed).

**Fetch wait (always on, LOYALTY_FETCH_MAX_WAIT_MS, default 100).** Faust creates the
worker's consumer with ``fetch_max_wait_ms=1500``. aiokafka keeps one fetch in flight per
broker, and a fetch for partitions with no new data is held at the broker for that long,
so records arriving meanwhile for the other partitions wait too. At 1,000 receipts/s the
clients agent waited 1.3-1.5 s for a batch with a backlog in the topic, again and again,
in about half the runs. p99 latency in six runs each (``bench-stream --receipts 2000
--rate 1000 --seconds 10``): 1500 ms: 193-5,172 ms, three runs over 4 s; 100 ms: 200-1,715 ms;
20 ms: 206-850 ms. Draining a backlog (30,000 receipts, two or three runs each; noisy):
1500 ms 2,177-2,256 receipts/s, 500 ms 1,828, 100 ms 1,883-2,084, 20 ms 1,816-1,838. So
100 ms: a fetch wait adds at most ~100 ms per hop, and an idle consumer sends up to 10
fetches a second to each broker; 1500 suits a pure backlog drain.

**Fast drain (opt-in, LOYALTY_FAST_DRAIN=true).**

Faust's consumer hands every message to the streams through
``wait_first(callback(message), suspend_flow.wait())``: two tasks and an ``asyncio.wait``
per message, which capped a trivial agent at ~2,800 events/s here (~2,300 with a table).
The patch calls ``callback(message)`` directly while the flow is not suspended and keeps
Faust's path otherwise: measured ~5,400 events/s (~4,900 with a table) on the same machine.

Caveat: a callback that starts just before a rebalance suspends the flow is awaited to the
end instead of being abandoned, so a message of a revoked partition can still be processed
once. Processing is idempotent (deduplication, deterministic event ids), but that edge has
not been soak-tested: the patch is off by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

_original = faust_consumer.Consumer._drain_messages
_original_new_offset = faust_consumer.Consumer._new_offset
_commit_holds: set[tuple[int, Any]] = set()  # (owner, tp): no commits of tp meanwhile


def hold_commits(owner: int, tp: Any) -> None:
    """Hold the commits of partition ``tp`` until ``release_commits`` (see agents.offsets)."""
    _commit_holds.add((owner, tp))


def release_commits(owner: int, tp: Any) -> None:
    _commit_holds.discard((owner, tp))


def commits_held(tp: Any) -> bool:
    return any(held == tp for _, held in _commit_holds)


def _new_offset(self: Any, tp: Any) -> int | None:
    if _commit_holds and commits_held(tp):
        return None  # acked records stay in Faust's list; committed once released
    result: int | None = _original_new_offset(self, tp)
    return result


async def seek_to_committed_or_beginning(consumer: Any,
                                         skip_topics: frozenset[str] = frozenset()) -> dict[Any, int | None]:
    """``consumer.seek_to_committed()``, then seek the partitions it left alone (no
    committed offset, or 0) to the beginning, except those of ``skip_topics`` (Faust's
    table changelogs: recovery positions them itself). Returns the committed offsets."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    unseeked = [tp for tp, offset in committed.items() if not offset and tp.topic not in skip_topics]
    if unseeked:
        await consumer.seek_to_beginning(*unseeked)
    return committed


async def _seek_to_committed(self: Any) -> Any:  # pragma: no cover - needs a broker
    changelogs = frozenset(self.app.tables.changelog_topics)
    return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer(), changelogs)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - needs a broker
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspended = self.suspend_flow.is_set
    since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
            ait = cast(AsyncIterator[Any], getmany(timeout=1.0))
            await asyncio.sleep(0)
            if self.should_stop:
                continue
            async for tp, message in ait:
                since_yield += 1
                if since_yield > 100:
                    await asyncio.sleep(0)
                    since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    continue
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if suspended():
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                else:
                    await callback(message)
                set_read_offset(tp, offset)
            self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise


_original_create = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
_fetch_max_wait_ms = 1500  # Faust's own value, until apply() sets the worker's


def with_fetch_max_wait(consumer: Any, ms: int) -> Any:
    """Set an aiokafka consumer's ``fetch_max_wait_ms`` (read when it starts its fetcher)."""
    consumer._fetch_max_wait_ms = ms
    return consumer


def _create_worker_consumer(self: Any, transport: Any) -> Any:  # pragma: no cover - needs a broker
    return with_fetch_max_wait(_original_create(self, transport), _fetch_max_wait_ms)


def apply(fast_drain: bool, fetch_max_wait_ms: int = 1500) -> None:
    global _fetch_max_wait_ms
    _fetch_max_wait_ms = fetch_max_wait_ms
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_aiokafka.AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
    faust_consumer.Consumer._drain_messages = _drain_messages if fast_drain else _original  # type: ignore[method-assign]
