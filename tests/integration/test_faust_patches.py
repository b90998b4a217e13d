"""The rebalance seek fix of app.stream.faust_patches, against the real broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.settings import Settings
from app.stream.faust_patches import seek_to_committed_or_beginning
from app.wire.kafka_io import ensure_topics, produce

pytestmark = pytest.mark.integration


def test_partitions_without_a_committed_offset_go_back_to_the_beginning(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:8]
    topic, changelog = f"seek{tag}", f"seek{tag}-changelog"
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "LOYALTY_PARTITIONS": "2"})

    async def run() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        await ensure_topics(settings, [topic, changelog])
        lines = [b"%d" % i for i in range(40)]
        await produce(settings, topic, lines, key_fn=None)
        await produce(settings, changelog, lines, key_fn=None)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"g{tag}",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in (topic, changelog) for p in (0, 1)]
            consumer.assign(tps)
            await consumer.commit({TopicPartition(topic, 1): OffsetAndMetadata(3, "")})
            for tp in tps:  # the fetcher has moved on, as after records dropped by a rebalance
                end = (await consumer.end_offsets([tp]))[tp]
                consumer.seek(tp, end)
            committed = await seek_to_committed_or_beginning(consumer, frozenset({changelog}))
            assert committed[TopicPartition(topic, 0)] is None
            return {tp: await consumer.position(tp) for tp in tps}, await consumer.end_offsets(tps)
        finally:
            await consumer.stop()

    positions, ends = asyncio.run(run())
    # no commit: back to the beginning; committed: its offset; changelogs: left alone
    assert positions[TopicPartition(topic, 0)] == 0
    assert positions[TopicPartition(topic, 1)] == 3
    for p in (0, 1):
        tp = TopicPartition(changelog, p)
        assert positions[tp] == ends[tp] > 0


def test_fetch_range_reads_exactly_the_requested_offsets(kafka_bootstrap: str) -> None:
    from app.wire.kafka_io import fetch_range

    topic = f"range{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "LOYALTY_PARTITIONS": "1"})

    async def run() -> list[int]:
        await ensure_topics(settings, [topic])
        await produce(settings, topic, [b"%d" % i for i in range(3000)], key_fn=None)
        records = await fetch_range({"bootstrap_servers": kafka_bootstrap}, topic, 0, 17, 2500)
        return [r.offset for r in records]

    assert asyncio.run(run()) == list(range(17, 2500))
