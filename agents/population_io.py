"""The worker's side of population rounds (agents.population): reading and publishing the
population topic, sweeping partitions after a round, publishing partial aggregates."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from agents import failsafe
from agents.due_index import stored_dues
from agents.population import ROUND_KEY, Rounds, encode, partial_doc
from app.wire import codecs

log = logging.getLogger("loyalty.population")
YIELD_EVERY = 1000  # records scanned between two yields to the agents


async def population_step(p: Any, partition: int, until: int, generation: int) -> None:
    """One due scan of an owned partition: sweep it after a new round; publish its partial
    of the open round once its watermark passes the round and its sweep is over."""
    rounds: Rounds = p.rounds
    last = rounds.last
    if last is not None and p.swept.get(partition) != last:
        started = time.perf_counter()
        n = p.due_index.build(partition, generation,
                              stored_dues(p.clients, partition, p.engine.fingerprint, last))
        p.swept[partition] = last
        log.info("population round %d: partition %d swept (%d clients due), %.2f s",
                 last, partition, n, time.perf_counter() - started)
    instant = rounds.pending
    if until < instant or rounds.has_partial(partition):
        return
    if last is not None and p.due_index.due(partition, last, 1):
        return  # clients not caught up with the last round yet
    started = time.perf_counter()
    items = await _items(p.clients.data._db_for_partition(partition))
    doc = partial_doc(p.engine.spec, p.engine, instant, partition, p.partitions, items, until,
                      lambda value: codecs.split_table_value(value)[1])
    await p.app.producer.send_and_wait(p.population_topic, b"partial:%d" % partition, encode(doc),
                                       0, None, None)
    rounds.published.add((instant, partition))
    log.info("population round %d: partition %d partial published (%d clients), %.2f s",
             instant, partition, doc["agg"]["clients"], time.perf_counter() - started)


async def _items(db: Any) -> list[tuple[bytes, bytes]]:
    """A partition's records, yielding to the agents while reading."""
    out = []
    for n, item in enumerate(db.items()):
        out.append(item)
        if n % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)
    return out


def register_population(app: Any, p: Any, kafka: dict[str, Any]) -> None:
    """Every worker reads the whole population topic (no consumer group)."""
    if p.rounds is None:
        return

    @app.task  # type: ignore[untyped-decorator]
    async def population_reader() -> None:
        while True:
            try:
                await _read(p, kafka)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failsafe.is_infrastructure(exc):
                    log.exception("population reader failed; restarting in 5 s")
                else:
                    log.warning("population reader stopped by %s; restarting in 5 s", failsafe.describe(exc))
                await asyncio.sleep(5.0)


async def _read(p: Any, kafka: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    rounds: Rounds = p.rounds
    tp = TopicPartition(p.population_topic, 0)
    consumer = AIOKafkaConsumer(**kafka, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        if end == 0:
            rounds.ready.set()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=500)
            for record in batch.get(tp, []):
                done = None
                if rounds.take(record.key, orjson.loads(record.value)):
                    # merging fits the predictive models (seconds at a million clients): in a
                    # thread, so the agents and the consumer's heartbeats go on meanwhile
                    started = time.perf_counter()
                    done = rounds.complete(await asyncio.to_thread(rounds.merge))
                    log.info("population round %d: merged in %.2f s", rounds.last or 0,
                             time.perf_counter() - started)
                if rounds.last is not None:
                    p.metrics.population_round.set(rounds.last)
                p.metrics.population_pending.set(rounds.pending)
                if done is not None:
                    await p.app.producer.send_and_wait(p.population_topic, ROUND_KEY + b"%d" % done["instant"],
                                                       encode(done), 0, None, None)
                    rounds.rounds_seen.add(done["instant"])
                    log.info("population round %d merged: %s", done["instant"],
                             "empty" if done["snapshot"] is None else done["snapshot"]["version"])
            if not rounds.ready.is_set() and await consumer.position(tp) >= end:
                rounds.ready.set()
    finally:
        await consumer.stop()
