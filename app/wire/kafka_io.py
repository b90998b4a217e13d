"""Small aiokafka helpers for the CLI and tests: topic creation, producing, tailing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings
from app.wire.kafka_conn import options, wait_for_kafka

log = logging.getLogger("loyalty.kafka")


def service_topics(settings: Settings) -> list[str]:
    return [settings.topic_receipts, settings.topic_profiles, settings.topic_communications,
            settings.topic_changes,
            settings.topic_dlq, settings.topic_client_events, settings.topic_actions, settings.topic_actions_dlq,
            settings.topic_population, *([settings.facts_topic] if settings.facts_topic else [])]


def topic_configs(settings: Settings) -> dict[str, str]:
    """Configuration of every topic the service creates (Faust's included)."""
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None,
                        timeout: float | None = None) -> None:
    """Create the service's topics (idempotent) with LOYALTY_PARTITIONS partitions and
    LOYALTY_REPLICATION_FACTOR replicas; waits for the cluster up to ``timeout`` (default
    LOYALTY_CONNECT_TIMEOUT) and raises ``KafkaUnavailable`` with one line after it. Topics
    that exist with fewer replicas than configured are reported once (not changed)."""
    admin = await wait_for_kafka(settings, timeout)
    try:
        names = list(names or service_topics(settings))
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics([_new_topic(settings, n) for n in wanted])
        if settings.replication_factor > 1:
            await _report_replicas(admin, settings, [n for n in names if n in existing])
    finally:
        await admin.close()


def _new_topic(settings: Settings, name: str) -> NewTopic:
    """The population topic has one partition (one order for every worker) and is compacted
    (the latest partial of each partition and the latest round); the others have
    LOYALTY_PARTITIONS."""
    configs = topic_configs(settings)
    if name == settings.topic_population:
        return NewTopic(name, 1, settings.replication_factor,
                        topic_configs={**configs, "cleanup.policy": "compact"})
    return NewTopic(name, settings.partitions, settings.replication_factor, topic_configs=configs)


async def _report_replicas(admin: Any, settings: Settings, names: list[str]) -> None:
    if not names:
        return
    try:
        described = await admin.describe_topics(names)
    except Exception as exc:  # informational only
        log.debug("cannot describe topics: %s", exc)
        return
    short = sorted(d["topic"] for d in described
                   if d.get("partitions") and min(len(p["replicas"]) for p in d["partitions"])
                   < settings.replication_factor)
    if short:
        log.warning("topics with fewer replicas than LOYALTY_REPLICATION_FACTOR=%d (not changed; "
                    "kafka-reassign-partitions can raise it): %s", settings.replication_factor, ", ".join(short))


def client_key(line: bytes) -> bytes | None:
    """POS systems may key receipts by anything; the simulator keys by client id."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    cid = doc.get("client_id") if isinstance(doc, dict) else None
    return cid.encode() if isinstance(cid, str) else None


async def produce(settings: Settings, topic: str, lines: Iterable[bytes], rate: float = 0.0,
                  key_fn: Any = client_key) -> tuple[int, float]:
    """Send lines (values) to a topic; ``rate`` messages/s (0: as fast as possible)."""
    producer = AIOKafkaProducer(**options(settings), linger_ms=5,
                                max_batch_size=256 * 1024, acks="all", enable_idempotence=True)
    await producer.start()
    started = time.perf_counter()
    n = 0
    try:
        for line in lines:
            await producer.send(topic, value=line, key=key_fn(line) if key_fn else None)
            n += 1
            if rate > 0:
                ahead = n / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return n, time.perf_counter() - started


async def tail(settings: Settings, topic: str, idle_timeout: float = 10.0,
               max_messages: int | None = None, group: str | None = None) -> AsyncIterator[Any]:
    """Yield messages from the beginning of a topic until idle for ``idle_timeout``.

    Reads committed messages only (what a downstream consumer of transactional producers
    should see; harmless for the worker's plain at-least-once writes).
    """
    consumer = AIOKafkaConsumer(topic, **options(settings),
                                group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=group is not None,
                                isolation_level="read_committed")
    await consumer.start()
    n = 0
    try:
        while max_messages is None or n < max_messages:
            batch = await consumer.getmany(timeout_ms=int(idle_timeout * 1000), max_records=1000)
            if not batch:
                return
            for records in batch.values():
                for record in records:
                    n += 1
                    yield record
    finally:
        await consumer.stop()


async def _read_until(consumer: AIOKafkaConsumer, ends: dict[Any, int], deadline: float,
                      what: str) -> list[Any]:
    """Records of the assigned partitions with offsets below ``ends``, from their positions."""
    out: list[Any] = []
    pending = set(ends)
    while True:
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        if not pending:
            return out
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: end offsets not reached in time")
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=5000)
        for tp, records in batch.items():
            out.extend(r for r in records if r.offset < ends[tp])


async def read_to_end(settings: Settings, topic: str, timeout: float = 120.0) -> list[Any]:
    """All committed records of a topic, up to the end offsets taken when the read starts.

    Unlike :func:`tail`, a slow fetch cannot end the read early: it stops at the end offsets
    (or raises ``TimeoutError`` after ``timeout`` seconds).
    """
    consumer = AIOKafkaConsumer(topic, **options(settings),
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()  # no group: every partition is assigned to this consumer
    deadline = time.monotonic() + timeout
    try:
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no partitions")
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        return await _read_until(consumer, await consumer.end_offsets(tps), deadline, topic)
    finally:
        await consumer.stop()


async def fetch_range(connection: dict[str, Any], topic: str, partition: int, start: int, end: int,
                      timeout: float = 120.0) -> list[Any]:
    """The records of one partition with offsets in [start, end), read with a plain consumer
    (no group; ``connection``: :func:`app.wire.kafka_conn.options`). For records a Faust
    consumer skipped (agents.offsets)."""
    consumer = AIOKafkaConsumer(**connection, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        return await _read_until(consumer, {tp: end}, time.monotonic() + timeout,
                                 f"{topic}[{partition}] {start}..{end - 1}")
    finally:
        await consumer.stop()
