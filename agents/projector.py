"""The projector: segment changes -> the Redis projection (:mod:`app.projection.store`).

A task of the worker with its own Kafka consumer (group ``<app id>-projector``) on the
segment-changes topic, apart from Faust's consumer: while Redis is down it retries the same
batch with backoff (counting ``loyalty_projection_errors``, ``loyalty_projection_lag_seconds``
growing) and neither polls nor commits, so nothing is lost and the Faust agents go on
(receipts are processed, changes are published). A Faust agent would not do: once its
buffer is full, Faust's conductor waits for it and every agent of the worker stops. When
Redis answers again the projector goes on from its committed offset.

It also consumes the ``<app id>-clients-changelog`` topic: every write of a client's record
(each receipt, profile or tick) projects the client's summary metrics (``Engine.metrics`` at
the client's clock), revenue and hashed contacts (:mod:`app.projection.audience`), so the
POS lookup and the revenue reports follow every input, not only segment changes. Metrics
come from that one source, in the changelog's order: a change event carries none (an earlier
version enriched change events from the local table too; a late receipt, which changes
metrics without moving the client's clock, then let an older enrichment overwrite a newer
one). And it counts scenario actions and conversions from the actions topic
(:mod:`app.projection.scenarios`).

``loyalty projection rebuild`` fills a fresh generation of the keyspace from Kafka:

1. the segment-changes topic from its beginning (history: transitions per day, last
   month's segment, previous segments, membership intervals),
2. then the ``<app id>-clients-changelog`` topic (the compacted changelog of the clients
   table: every client's current segments and metrics, complete even where the changes
   topic's retention has dropped old changes),
3. copies snapshot and transition days and membership intervals the new generation lacks
   from the old one (history older than the topic's retention: app.projection.history_write),
   counts the receipt-facts topic and keeps the period days it no longer holds
   (app.projection.period_copy),
4. switches readers and writers to the new generation, applies the changes and facts
   published meanwhile, and deletes the old generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import orjson
from faust.types import TP

from app.projection import periods
from app.projection import scenarios as scenario_counts
from app.projection.audience import Contacts, contacts_from_value, contacts_row, write_contacts
from app.projection.history_write import copy_days, copy_older, writer_projection
from app.projection.period_copy import rebuild_facts
from app.projection.store import (
    REVENUE_METRIC,
    Projection,
    Update,
    cents,
    drop_generation,
)
from app.settings import Settings
from app.wire import codecs
from app.wire.kafka_conn import options
from rules import Engine
from rules.record.state import is_aux_key
from rules.record.state import loads as load_state

log = logging.getLogger("loyalty.projector")
SNAPSHOT_EVERY = 10.0  # seconds between timer runs
SNAPSHOT_IDLE = 300.0  # snapshot at least this often even without changes


def state_updates(engine: Engine, client_id: str, value: bytes) -> list[Update]:
    """Updates that make the projection hold one client's current state (no counting)."""
    _, raw = codecs.split_table_value(value)
    state = load_state(raw)
    if not state.segments:
        return []
    metrics = engine.metrics(state, state.clock)
    blob = orjson.dumps(metrics)
    revenue = cents(metrics.get(REVENUE_METRIC))
    return [Update(client_id, dim, str(seg), str(prev or ""), int(since), count=False,
                   metrics=blob, metrics_at=state.clock, revenue=revenue)
            for dim, (seg, since, prev) in sorted(state.segments.items())]


class Projector:
    def __init__(self, settings: Settings, pipeline: Any,
                 projection: Projection | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.engine: Engine = pipeline.engine
        self.projection = projection or writer_projection(settings)  # with LOYALTY_HISTORY_DAYS
        self.applied = 0
        self.last_snapshot: tuple[str, float] | None = None
        self.dirty = True
        self._last_warning = 0.0
        self._value_dims = {d.id for _, d in self.engine.dims if d.value is not None}

    def topics(self) -> list[str]:
        """What the projector consumes: changes, the clients changelog (every metrics change),
        and the scenario actions (cluster-wide scenario results) when scenarios run."""
        s = self.settings
        out = [s.topic_changes, s.clients_changelog]
        if self.pipeline.scenarios is not None:
            out.append(s.topic_actions)
        if s.facts_topic:
            out.append(s.facts_topic)  # receipt facts: period reports (app.projection.periods)
        return out

    async def apply_any(self, records: list[Any]) -> int:
        """Project records of one partition of any of :meth:`topics`."""
        topic = records[0].topic
        if topic == self.settings.topic_changes:
            return await self.apply_records(records)
        if topic == self.settings.clients_changelog:
            return await self.apply_metrics(records)
        if topic == self.settings.facts_topic:
            rows_f = periods.facts(r.value for r in records)
            await self._retry(lambda: self._count_facts(rows_f), 0.0)
            return len(rows_f)
        rows = scenario_counts.counted(r.value for r in records)
        await self._retry(lambda: self._count_scenarios(rows), 0.0)
        return len(rows)

    async def _count_facts(self, rows: list[periods.Fact]) -> None:
        await periods.count(self.projection.redis, await self.projection.prefix_now(), rows,
                            self.projection.days.cal)

    async def _count_scenarios(self, rows: list[scenario_counts.Row]) -> None:
        await scenario_counts.count(self.projection.redis, await self.projection.prefix_now(), rows)

    async def apply_metrics(self, records: list[Any]) -> int:
        """Project the clients changelog: each client's current summary metrics and revenue,
        so that lookups and revenue reports follow every receipt, not only segment changes
        (the last value of a client in the batch; segments are the changes topic's)."""
        latest = {r.key: r.value for r in records if r.key is not None}
        updates: list[Update] = []
        contacts: list[Contacts] = []  # the hashed e-mail and phone (app.projection.audience)
        for n, (key, value) in enumerate(latest.items()):
            if n % 100 == 99:
                await asyncio.sleep(0)  # let the agents run: ~30 us of decoding per record
            if value is None or is_aux_key(key):
                continue
            try:
                state = load_state(codecs.split_table_value(value)[1])
                if state.segments:
                    updates.append(Update.metrics_only(key.decode(), self.engine.metrics(state, state.clock),
                                                       state.clock))
                    contacts.append(contacts_row(key.decode(), state))
            except Exception:
                self.metrics.projection_errors.inc()
                log.exception("skipping a clients changelog record at %s[%s]", records[0].topic,
                              records[0].partition)
        async def write() -> list[int]:  # the digests after the metrics: they follow metrics_at
            results = await self.projection.apply_metrics(updates)
            await write_contacts(self.projection, contacts)
            return results

        results = await self._retry(write, 0.0)
        self.applied += sum(results)
        return len(updates)

    async def apply_records(self, records: list[Any]) -> int:
        """Project Kafka records of the changes topic (in offset order per partition): the
        segments; the metrics and revenue come from the clients changelog only."""
        updates: list[Update] = []
        for rec in records:
            try:
                updates.append(Update.from_event(orjson.loads(rec.value)))
            except Exception:  # not a change event: nothing to project
                self.metrics.projection_errors.inc()
                log.exception("skipping malformed change at %s[%s]@%s", rec.topic,
                              rec.partition, rec.offset)
        stamps = [rec.timestamp / 1000.0 for rec in records if rec.timestamp]
        await self.apply_with_retry(updates, min(stamps, default=0.0))
        self.metrics.projection_lag.set(max(0.0, time.time() - max(stamps)) if stamps else 0.0)
        return len(updates)

    async def run(self) -> None:
        """Consume the changes topic in this worker's own consumer group for the projection
        (``<app id>-projector``); commit only what Redis has taken."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker trouble: start over from the committed offsets
                self.metrics.projection_errors.inc()
                log.warning("projector consumer failed (%s: %s); restarting in 5 s",
                            type(exc).__name__, exc)
                await asyncio.sleep(5.0)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        s = self.settings
        consumer = AIOKafkaConsumer(
            *self.topics(), **options(s), group_id=f"{s.app_id}-projector",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=500,
            max_poll_interval_ms=3_600_000)  # a Redis outage is not a reason to leave the group
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if not any(batch.values()):  # caught up: nothing is waiting to be projected
                    self.metrics.projection_lag.set(0.0)
                for tp, records in batch.items():
                    if not records:
                        continue
                    await self.apply_any(records)
                    try:
                        await consumer.commit({tp: records[-1].offset + 1})
                    except KafkaError as exc:  # rebalanced meanwhile: redelivery is harmless
                        log.warning("projector commit failed: %s: %s", type(exc).__name__, exc)
        finally:
            await consumer.stop()

    async def apply_with_retry(self, updates: list[Update], oldest: float) -> None:
        results = await self._retry(lambda: self.projection.apply(updates), oldest)
        applied = sum(results)
        self.applied += applied
        self.dirty = self.dirty or applied > 0

    async def _retry(self, write: Callable[[], Awaitable[Any]], oldest: float) -> Any:
        """``write()`` until Redis takes it (backoff to 5 s; one warning per 30 s)."""
        delay = 0.1
        while True:
            try:
                return await write()
            except Exception as exc:  # Redis down, timeouts, failover: wait and retry
                self.metrics.projection_errors.inc()
                if oldest:
                    self.metrics.projection_lag.set(max(0.0, time.time() - oldest))
                now = time.monotonic()
                if now - self._last_warning > 30:
                    self._last_warning = now
                    log.warning("projection write failed (%s: %s); retrying, not acking",
                                type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def exports_sizes(self) -> bool:
        """Whether this worker exports ``loyalty_segment_clients``: the cluster-wide sizes
        (read from Redis) come from exactly one worker, the one with client-events partition 0
        active, so that sums over workers are the true sizes."""
        try:
            p = self.pipeline
            return TP(p.client_events.get_topic_name(), 0) in p.app.assignor.assigned_actives()
        except Exception:
            return False

    async def snapshot_tick(self) -> None:
        """Daily snapshot: rewritten while the day lasts, so the last write is the day's."""
        now = self.pipeline.clock()
        day = self.projection.days.day(int(now.timestamp()))
        mono = time.monotonic()
        last = self.last_snapshot
        try:
            if last is None or last[0] != day or self.dirty or mono - last[1] >= SNAPSHOT_IDLE:
                self.dirty = False
                await self.projection.snapshot(day)
                self.last_snapshot = (day, mono)
            if not self.exports_sizes():
                self.metrics.segment_clients.clear()  # another worker exports the global sizes
                return
            dims: dict[str, list[str]] = {
                d.id: [x.id for x in d.segments] + ([d.default] if d.default else [])
                for _, d in self.engine.dims if d.id not in self._value_dims}
            for dim, segs in (await self.projection.sizes(dims)).items():
                for seg in dict.fromkeys(dims[dim] + list(segs)):
                    self.metrics.segment_clients.labels(dim, seg).set(segs.get(seg, 0))
        except Exception as exc:
            self.dirty = True
            self.metrics.projection_errors.inc()
            log.warning("projection snapshot failed: %s: %s", type(exc).__name__, exc)


def register_projector(app: faust.App, pipeline: Any, settings: Settings) -> Projector:
    projector = Projector(settings, pipeline)

    @app.task  # type: ignore[untyped-decorator]
    async def project() -> None:
        await projector.run()

    @app.timer(SNAPSHOT_EVERY, name="projection_snapshots")  # type: ignore[untyped-decorator]
    async def snapshots() -> None:
        await projector.snapshot_tick()

    return projector


# -- rebuild ----------------------------------------------------------------------------------

async def read_topic(settings: Settings, topic: str, on_batch: Callable[[list[Any]], Awaitable[None]],
                     start: dict[int, int] | None = None) -> dict[int, int]:
    """Feed ``on_batch`` every record of ``topic`` from ``start`` (default: the beginning)
    up to the end offsets at the call; return those end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return {}
        parts = consumer.partitions_for_topic(topic)
        if parts is None:  # not in the cached metadata yet: load it
            await consumer._client.add_topic(topic)
            parts = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        firsts = await consumer.beginning_offsets(tps)
        left = set()
        for tp in tps:
            begin = max(firsts[tp], (start or {}).get(tp.partition, 0))
            consumer.seek(tp, begin)
            if begin < ends[tp]:
                left.add(tp)
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=2000)
            for tp, records in batch.items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    await on_batch(records)
            for tp in list(left):
                if await consumer.position(tp) >= ends[tp]:
                    left.discard(tp)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def rebuild(settings: Settings, engine: Engine, say: Callable[[str], None] = print,
                  settle: float = 2.0) -> dict[str, Any]:
    proj = writer_projection(settings)  # the membership history too, from the change topic
    redis = proj.redis
    lock = f"{proj.ns}:rebuild:lock"
    if not await redis.set(lock, str(time.time()), nx=True, ex=3600):
        await proj.close()
        raise SystemExit(f"a rebuild is already running (delete {lock} if it is not)")
    stats = {"changes": 0, "changes_applied": 0, "clients": 0, "catch_up": 0, "scenario_events": 0}
    try:
        old = await proj.generation(0.0)
        new = str(max(int(await redis.incr(f"{proj.ns}:gen:seq")), int(old) + 1))
        await drop_generation(redis, proj.prefix(new))
        say(f"rebuilding generation {new} (current {old})")

        async def changes(records: list[Any], key: str = "changes") -> None:
            updates = [Update.from_event(orjson.loads(r.value)) for r in records]
            results = await proj.apply(updates, gen=new)
            stats[key] += len(updates)
            stats["changes_applied"] += sum(results)

        async def changelog(records: list[Any]) -> None:
            latest = {r.key: r.value for r in records if r.key is not None}  # last write wins
            updates: list[Update] = []
            contacts: list[Contacts | None] = []
            for key, value in latest.items():
                if value is not None and not is_aux_key(key):  # None: a tombstone
                    updates += state_updates(engine, key.decode(), value)
                    contacts.append(contacts_from_value(key.decode(), value))
                    stats["clients"] += 1
            await proj.apply(updates, gen=new)
            await write_contacts(proj, [c for c in contacts if c is not None], gen=new)

        ends = await read_topic(settings, settings.topic_changes, changes)
        say(f"changes topic: {stats['changes']} changes, {stats['changes_applied']} applied")
        await read_topic(settings, settings.clients_changelog, changelog)
        say(f"clients changelog: {stats['clients']} records")
        copied = await copy_days(proj, old, new) + await copy_older(proj, old, new)
        facts_ends: dict[int, int] = {}
        if settings.facts_topic:  # recounted; the days the topic no longer holds kept (app.projection.period_copy)
            facts_ends, counted = await rebuild_facts(redis, proj.prefix(old), proj.prefix(new), proj.days.cal,
                                                      lambda fn: read_topic(settings, settings.topic_facts, fn))
            stats.update(counted)
        await redis.set(proj.gen_key, new)
        say(f"switched to generation {new}; copied {copied} history keys from {old}")

        async def catch_up(records: list[Any]) -> None:
            await changes(records, "catch_up")

        await asyncio.sleep(settle)  # writers re-read the generation within a second
        await read_topic(settings, settings.topic_changes, catch_up, start=ends)

        async def scenarios(records: list[Any]) -> None:  # after the switch: none is missed
            rows = scenario_counts.counted(r.value for r in records)
            stats["scenario_events"] += await scenario_counts.count(redis, proj.prefix(new), rows)

        await read_topic(settings, settings.topic_actions, scenarios)

        async def receipt_facts(records: list[Any]) -> None:  # published meanwhile
            stats["receipt_facts"] += await periods.count(
                redis, proj.prefix(new), periods.facts(r.value for r in records), proj.days.cal)

        if settings.facts_topic:
            await read_topic(settings, settings.facts_topic, receipt_facts, start=facts_ends)
        await proj.snapshot(proj.days.day(int(settings.clock_fn()().timestamp())), gen=new)
        stats["deleted"] = await drop_generation(redis, proj.prefix(old))
        stats["generation"] = int(new)
        say(orjson.dumps(stats).decode())
        return stats
    finally:
        await redis.delete(lock)
        await proj.close()
