"""Faust agents and the due timer. Thin: bytes in, core via :mod:`agents.handler`, bytes out.

Flow::

    pos.receipts ─┐ route_receipts ─┐                      ┌─> loyalty.segment-changes
                  └─> DLQ           ├─> client-events ─> clients ─┤   (CloudEvents, key = client)
    crm.client-profiles ─ route_profiles ┤      ^                  ├─> loyalty.scenario-actions
    crm.communications ─ route_communications ┘ │                  │
                                                │                  │   (if scenarios are loaded)
                                                │                  └─> clients table (+ due index
                                                │                      in memory: agents.due_index)
                                                └── due_scanner (ticks, same partition)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import faust
import orjson

from agents import failsafe
from agents.batching import ClientTable, in_event, send
from agents.due_index import DueIndex, partitioned, stored_dues
from agents.handler import ClientHandler, route
from agents.offsets import register_filler
from agents.population_io import population_step
from agents.watermark import BEACON_S, KEY, WATERMARK, Sink, Source
from agents.watermark import encode as encode_watermark
from app.metrics import Metrics
from app.wire import codecs
from rules import Engine, RejectedInput
from rules.calendar import to_epoch
from rules.inputs.receipts import rejected_profile_copy

log = logging.getLogger("loyalty.agents")
MAX_TICKS = 5_000  # ticks per partition per scan (a sweep after a rules change is all due)
ROUND_SCAN_S = 0.25  # seconds between due scans while a population round is in the past


@dataclass
class Pipeline:
    app: faust.App
    engine: Engine
    metrics: Metrics
    clock: Callable[[], datetime]
    receipts: Any
    profiles: Any
    communications: Any
    client_events: Any
    changes: Any
    dlq: Any
    clients: Any  # faust Table: client id -> codecs.table_value
    due_index: DueIndex  # derived from the clients table, in memory
    inflight: dict[tuple[int, bytes], float]  # (due, client key) of ticks sent -> when
    fault_stall_partition: int
    input_next: dict[Any, int]  # input TP -> next offset to route (watermark for due ticks)
    detector: Any = None  # agents.monitor's StallDetector, set at registration
    kafka: dict[str, Any] = field(default_factory=dict)  # app.wire.kafka_conn.options (agents.offsets)
    batch_max: int = 500
    batch_within: float = 0.05
    direct_sends: bool = False  # see agents.batching.send
    scenarios: Any = None  # rules.scenario_state.ScenarioRunner, or None: no scenarios
    actions: Any = None  # the scenario actions topic (with scenarios)
    guard: failsafe.Guard | None = None  # set by register: infrastructure retries, readiness
    problems: dict[str, str] = field(default_factory=dict)  # agents.monitor: kafka, redis, disk
    earliest: int | None = None  # LOYALTY_EARLIEST_EVENT (epoch s)
    lateness: int = 0  # LOYALTY_ALLOWED_LATENESS (s)
    idle_s: float = 10.0  # LOYALTY_WATERMARK_IDLE
    partitions: int = 1  # of the client-events topic
    sources: Source = field(default_factory=Source)  # agents.watermark, routers' side
    sink: Sink = field(default_factory=Sink)  # agents.watermark, clients agent's side
    facts: Any = None  # the receipt-facts topic (period reports), or None: not published
    rounds: Any = None  # agents.population.Rounds (rules that read the population), or None
    population_topic: str = ""  # LOYALTY_TOPIC_POPULATION
    swept: dict[int, int] = field(default_factory=dict)  # partition -> round instant swept


async def _to_dlq(p: Pipeline, event: Any, raw: bytes, exc: RejectedInput, source: str,
                  ctx: Any = None) -> None:
    """``ctx``: the Faust event whose context the send runs in (default: ``event``)."""
    msg = event.message
    p.metrics.rejected.labels(exc.reason).inc()
    p.metrics.dlq_writes.labels(source).inc()
    value, extra = codecs.dlq_copy(raw)
    headers = codecs.dlq_headers(exc, msg.topic, msg.partition, msg.offset) + extra

    async def write() -> None:
        with in_event(ctx or event):
            await p.dlq.send(key=event.key, value=value, headers=headers)

    await _guard(p).retry("dlq", write)


def _guard(p: Pipeline) -> failsafe.Guard:
    if p.guard is None:
        p.guard = failsafe.Guard(p.metrics)
    return p.guard


def _poison(p: Pipeline, agent: str, exc: Exception) -> RejectedInput:
    """A record whose processing raised on its own: its DLQ reason (see agents.failsafe)."""
    p.metrics.processing_errors.labels(agent).inc()
    log.error("%s: a record failed (%s); sent to the DLQ as processing_error", agent, failsafe.describe(exc))
    return RejectedInput("processing_error", failsafe.describe(exc))


def register(p: Pipeline, due_interval: float) -> None:
    app = p.app
    guard = _guard(p)
    handler = ClientHandler(p.engine, p.clock, p.scenarios, p.rounds)
    table = ClientTable(app, p.clients, p.direct_sends)
    value_dims = {d.id for _, d in p.engine.dims if d.value is not None}

    topic = p.client_events.get_topic_name()

    async def route_one(event: Any, ctx: Any, now: datetime, kind: bytes, source: str) -> None:
        raw = event.value
        msg = event.message
        if msg.partition == p.fault_stall_partition:  # fault injection (tests only)
            log.warning("fault injection: blocking on %s[%d]", msg.topic, msg.partition)
            await asyncio.Event().wait()
        kept = rejected_profile_copy(raw) if kind == codecs.PROFILE else raw  # no personal data in the DLQ
        tp = f"{msg.topic}:{msg.partition}"
        try:
            client_id, env, at = route(raw, kind, now, p.earliest)
        except RejectedInput as exc:
            p.sources.routed(tp, None)
            await _to_dlq(p, event, kept, exc, source, ctx)
        except Exception as exc:
            p.sources.routed(tp, None)
            await _to_dlq(p, event, kept, _poison(p, f"route {source}", exc), source, ctx)
        else:
            if client_id is None:
                p.metrics.receipts.labels("anonymous").inc()
            else:
                async def forward() -> Any:
                    return await send(p.app, p.direct_sends, ctx, p.client_events, topic, key, env)

                key = client_id.encode()
                try:
                    await guard.retry(f"route {source}", forward)
                except Exception as exc:  # not infrastructure: this record cannot be forwarded
                    await _to_dlq(p, event, kept, _poison(p, f"route {source}", exc), source, ctx)
            p.sources.routed(tp, at)  # after the send: a watermark record follows it
        p.input_next[msg.tp] = msg.offset + 1

    async def _route(stream: Any, kind: bytes, source: str) -> None:
        # external inputs may come from transactional producers: one offset per commit marker
        gaps = register_filler(app, f"route {source}", p.kafka, p.metrics, min_gap=2)
        async for batch in stream.take_events(p.batch_max, within=p.batch_within):
            try:
                now = p.clock()
                for event in batch:
                    for one in await _fill(guard, f"route {source}", gaps, app, event):
                        await route_one(one, event, now, kind, source)
                await gaps.done(app)
            except BaseException:
                failsafe.hold(batch)  # take_events would ack (commit) the batch: see agents.failsafe
                raise

    @app.agent(p.receipts, name="route_receipts")
    async def route_receipts(stream: Any) -> None:
        await _route(stream, codecs.RECEIPT, "receipts")

    @app.agent(p.profiles, name="route_profiles")
    async def route_profiles(stream: Any) -> None:
        await _route(stream, codecs.PROFILE, "profiles")

    @app.agent(p.communications, name="route_communications")
    async def route_communications(stream: Any) -> None:
        await _route(stream, codecs.COMMUNICATION, "communications")

    @app.agent(p.client_events, name="clients")
    async def process(stream: Any) -> None:
        # Batches: the change events of a whole batch are published and acked together,
        # then the batch's table writes follow (one broker round trip per batch, not per
        # receipt). Later messages of a client in the same batch see its pending state.
        gaps = register_filler(app, "clients", p.kafka, p.metrics)
        if p.rounds is not None:  # the current population round first (agents.population_io)
            await p.rounds.ready.wait()
        async for batch in stream.take_events(p.batch_max, within=p.batch_within):
            try:
                items = []  # (record, the Faust event whose context it runs in)
                for event in batch:
                    items += [(one, event) for one in await _fill(guard, "clients", gaps, app, event)]

                async def publish(items: list[tuple[Any, Any]] = items) -> list[_Done]:
                    return await _process_batch(p, handler, table, value_dims, items)

                async def write(done: list[_Done]) -> None:
                    await _write_all(p, table, done)

                # an infrastructure error while publishing re-runs the batch (idempotent: the
                # same ids again); one while writing retries the writes not done yet
                done = await guard.retry("clients", publish)
                await guard.retry("clients", functools.partial(write, done))
                for event, _ in items:  # processed: the position the stall monitor reads
                    p.input_next[event.message.tp] = event.message.offset + 1
                await gaps.done(app)
            except BaseException:
                failsafe.hold(batch)
                raise

    input_topics = (p.receipts.get_topic_name(), p.profiles.get_topic_name(),
                    p.communications.get_topic_name())

    def caught_up(tp: Any) -> bool:
        """Routed up to the partition's end (as far as this worker knows)."""
        highwater = app.consumer.highwater(tp)
        if highwater is None:
            return False
        committed = getattr(app.consumer, "_committed_offset", {})
        return max(p.input_next.get(tp, 0), committed.get(tp) or 0) >= highwater

    @app.timer(BEACON_S, name="watermark_beacon")  # type: ignore[untyped-decorator]
    async def watermark_beacon() -> None:
        """Send this worker's input marks to every client-events partition (agents.watermark)."""
        if app.rebalancing:
            return
        now = time.monotonic()
        owned = [tp for tp in app.assignor.assigned_actives() if tp.topic in input_topics]
        names = {f"{tp.topic}:{tp.partition}": tp for tp in owned}
        p.sources.forget(set(names))
        marks: dict[str, int | None] = {}
        for name, tp in names.items():
            mark = p.sources.mark(name, caught_up(tp), p.idle_s, now)
            if mark is not False:
                marks[name] = mark
        counts = {t: n for t in input_topics if (n := partition_count(app, t))}
        if not marks or len(counts) < len(input_topics):
            return
        value = encode_watermark(marks, counts)
        try:
            for partition in range(p.partitions):
                if p.direct_sends:
                    await app.producer.send(topic, KEY, value, partition, None, None)
                else:
                    await p.client_events.send(key=KEY, value=value, partition=partition)
        except Exception as exc:  # the next beacon sends newer marks
            if not failsafe.is_infrastructure(exc):
                raise
            log.warning("watermark beacon stopped by %s", failsafe.describe(exc))

    rocksdb = partitioned(p.clients)

    @app.timer(due_interval, name="due_scanner")  # type: ignore[untyped-decorator]
    async def due_scanner() -> None:
        if app.rebalancing:
            return
        try:
            await scan()
        except Exception as exc:  # ticks not sent now are sent by a later scan
            if not failsafe.is_infrastructure(exc):
                raise
            log.warning("due scan stopped by %s; the next scan retries", failsafe.describe(exc))

    if p.rounds is not None and rocksdb:
        @app.timer(ROUND_SCAN_S, name="population_scanner")  # type: ignore[untyped-decorator]
        async def population_scanner() -> None:
            """While the open population round is in the past (history being loaded, or a
            round just due), scan every ROUND_SCAN_S: a round takes a few scans (partial,
            merge, sweep ticks), and at LOYALTY_DUE_INTERVAL each a year of daily rounds took
            hours to load."""
            if app.rebalancing or p.rounds.pending > to_epoch(p.clock()):
                return
            await due_scanner()

    async def scan() -> None:
        now = to_epoch(p.clock())
        generation = app.rebalancing_count  # tables recovered: rebalancing is over
        backlog = 0
        resend_after = time.monotonic() - max(30.0, due_interval * 6)
        owned = sorted({tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic})
        if not rocksdb:
            owned = [0] if owned else []
        p.due_index.retain(set(owned))
        for partition in owned:
            if not p.due_index.built(partition, generation):
                started = time.perf_counter()
                behind = p.rounds.last if p.rounds is not None else None
                n = p.due_index.build(partition, generation,
                                      stored_dues(p.clients, partition, p.engine.fingerprint, behind))
                if behind is not None:
                    p.swept[partition] = behind
                log.info("due index of partition %d: %d clients, built in %.2f s",
                         partition, n, time.perf_counter() - started)
            until = p.sink.until(partition, now, p.lateness) if rocksdb else _until_all(p, now)
            if until is None:  # an input partition not heard of yet: hold the ticks
                continue
            if p.rounds is not None and rocksdb:  # population rounds (agents.population_io)
                await population_step(p, partition, until, generation)
                until = min(until, p.rounds.pending)
            for due, key in p.due_index.due(partition, until, MAX_TICKS):
                backlog += 1
                sent = p.inflight.get((due, key))
                if sent is not None and sent > resend_after:
                    continue
                p.inflight[(due, key)] = time.monotonic()
                await p.client_events.send(key=key, value=codecs.tick(due, until),
                                           partition=partition if rocksdb else None)
        p.metrics.due_backlog.set(backlog)


def partition_count(app: Any, topic: str) -> int | None:
    """Partitions of an input topic. Faust's ``topic_partitions`` reads the group
    coordinator's metadata snapshot, which only the group leader fills: a second worker got
    None and never sent its watermark, so every time-based change of its partitions was held
    (measured: 284 of 2,515 changes never published). The consumer's cluster metadata covers
    every subscribed topic on any member."""
    n = app.consumer.topic_partitions(topic)
    if n:
        return int(n)
    try:
        parts = app.consumer._thread._ensure_consumer().partitions_for_topic(topic)
    except Exception:  # no consumer yet
        return None
    return len(parts) if parts else None


def _until_all(p: Pipeline, now: int) -> int | None:
    """The least tick bound over every client-events partition (one in-memory due index)."""
    bounds = [p.sink.until(k, now, p.lateness) for k in range(p.partitions)]
    return None if any(b is None for b in bounds) else min(b for b in bounds if b is not None)


async def _fill(guard: failsafe.Guard, what: str, gaps: Any, app: Any, event: Any) -> list[Any]:
    """The records the consumer skipped before ``event`` (agents.offsets), then ``event``."""
    async def attempt() -> list[Any]:
        found: list[Any] = await gaps.fill(app, event)
        return found

    return await guard.retry(what, attempt)


@dataclass
class _Done:
    ctx: Any  # the Faust event whose context the table writes run in
    key: bytes
    message: bytes
    out: Any
    written: bool = False


async def _process_batch(p: Pipeline, handler: ClientHandler, table: ClientTable,
                         value_dims: set[str], items: list[tuple[Any, Any]]) -> list[_Done]:
    """Apply a batch: publish every change (acked) BEFORE any table write of the batch.

    If the worker dies in between, the batch is redelivered against the old state and the
    same events (same ids) are published again. The other order could persist the new
    state, then treat the redelivered receipt as a duplicate and lose the events.
    """
    changes_topic = p.changes.get_topic_name()
    actions_topic = p.actions.get_topic_name() if p.actions is not None else ""
    facts_topic = p.facts.get_topic_name() if p.facts is not None else ""
    pending: dict[bytes, bytes] = {}  # client key -> table value not yet written
    done: list[_Done] = []
    sent = []
    now = time.time()
    for event, ctx in items:
        started = time.perf_counter()
        key: bytes = event.key
        message: bytes = event.value
        if message[:1] == WATERMARK:
            p.sink.received(ctx.message.partition, message)
            continue
        stored = pending.get(key)
        if stored is None:
            stored = table.get(ctx, key)

        def read(other: bytes, ctx: Any = ctx) -> bytes | None:
            value = pending.get(other)
            return value if value is not None else table.get(ctx, other)

        try:
            out = handler.handle(key.decode(), message, stored, read)
        except RejectedInput as exc:
            await _to_dlq(p, event, message[1:], exc, "client-events", ctx)
            continue
        except Exception as exc:
            if failsafe.is_infrastructure(exc):
                raise
            await _to_dlq(p, event, message[1:], _poison(p, "clients", exc), "client-events", ctx)
            continue
        for change in out.events:
            data = change["data"]
            p.metrics.transition(data["dimension"], data["from"], data["to"],
                                 data["dimension"] in value_dims)
            if data["cause"] == "time":
                due_at = datetime.fromisoformat(change["time"]).timestamp()
                p.metrics.due_lateness.observe(max(0.0, now - due_at))
            sent.append(await send(p.app, p.direct_sends, ctx, p.changes, changes_topic, key,
                                   orjson.dumps(change)))
        for fact in out.facts:  # receipt facts for the period reports, acked like changes
            if p.facts is not None:
                sent.append(await send(p.app, p.direct_sends, ctx, p.facts, facts_topic, key,
                                       orjson.dumps(fact)))
        for action in out.actions:  # scenario actions and conversions, acked like changes
            sent.append(await send(p.app, p.direct_sends, ctx, p.actions, actions_topic, key,
                                   orjson.dumps(action)))
        for action in out.scenarios.actions:
            p.metrics.scenario_actions.labels(action["data"]["scenario"]).inc()
        for conversion in out.scenarios.conversions:
            p.metrics.scenario_conversions.labels(conversion["data"]["scenario"]).inc()
        for scenario, reason in out.scenarios.skipped:
            p.metrics.scenario_skipped.labels(scenario, reason).inc()
        if out.value is not None:
            pending[key] = out.value
        pending.update(out.archive)
        done.append(_Done(ctx, key, message, out))
        if out.kind == "communication":
            p.metrics.communications.labels(out.outcome).inc()
        if out.kind == "receipt":
            p.metrics.receipts.labels(out.outcome).inc()
            if out.occurred_at is not None:
                p.metrics.event_time_lag.observe(max(0.0, now - out.occurred_at.timestamp()))
        p.metrics.processing.labels(out.kind).observe(time.perf_counter() - started)
    if sent:
        await asyncio.gather(*sent)
    return done


async def _write_all(p: Pipeline, table: ClientTable, done: list[_Done]) -> None:
    """The table writes of a published batch, in order; a retry skips those written."""
    by_partition = partitioned(p.clients)
    await table.settle()
    for d in done:
        if not d.written:
            await _write(p, table, d, d.ctx.message.partition if by_partition else 0)
            d.written = True


async def _write(p: Pipeline, table: ClientTable, d: _Done, partition: int) -> None:
    """Table write of one handled message (the changelog needs it), due index updated."""
    for key, value in d.out.archive.items():  # before the record that no longer holds the rows
        await table.set(d.ctx, key, value)
    if d.out.value is not None:
        await table.set(d.ctx, d.key, d.out.value)
        p.due_index.set(partition, d.key, d.out.due_new)
    if d.message[:1] == codecs.TICK:
        p.inflight.pop((codecs.tick_due(d.message), d.key), None)
