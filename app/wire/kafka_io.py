"""Small aiokafka helpers for the CLI and tests: topic creation, producing, tailing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.settings import Settings


def service_topics(settings: Settings) -> list[str]:
    return [settings.topic_receipts, settings.topic_profiles, settings.topic_changes,
            settings.topic_dlq, settings.topic_client_events, settings.topic_actions, settings.topic_actions_dlq]


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None,
                        timeout: float = 60.0) -> None:
    """Create the service's topics (idempotent); waits for the broker up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            await admin.start()
            break
        except Exception:
            await admin.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in (names or service_topics(settings)) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics([NewTopic(n, settings.partitions, 1) for n in wanted])
    finally:
        await admin.close()


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
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5,
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
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
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
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
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


async def fetch_range(bootstrap: str, topic: str, partition: int, start: int, end: int,
                      timeout: float = 120.0) -> list[Any]:
    """The records of one partition with offsets in [start, end), read with a plain consumer
    (no group). For records a Faust consumer skipped (agents.offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
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
