"""Faust's own ceiling on this machine: a trivial agent with no business logic.

The worker's target (20,000 receipts/s per process) can only be met if faust-streaming
itself moves that many events per second through an agent. This script measures it on the
real local broker with the worker's consumer and producer settings: N messages are
produced to a 4-partition topic first, then one Faust worker process drains them in
batches (``take_events(500, within=0.05)``, like the clients agent) doing, per event:

* ``none``: nothing;
* ``produce``: one produce (``app.producer.send``, acked per batch, like the change events);
* ``table``: a read and a write of a RocksDB table through Faust's table API (changelog on);
* ``table+produce``: both, through Faust's table API;
* ``direct+produce``: the table written the way the clients agent does under
  at-least-once (``agents.batching.ClientTable``), plus one produce.

It prints events/s and the worker's CPU share (wall clock from the first batch to the
N-th event). Usage:
``python bench/bench_faust_ceiling.py [--events N] [--fast-drain] [--loop asyncio]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("none", "produce", "table", "table+produce", "direct+produce")


def worker(mode: str, topic: str, events: int, boot: str, data_dir: str, fast_drain: bool,
           loop: str) -> None:
    """Run in the child process: drain ``topic`` with a trivial agent, print one JSON line."""
    import logging

    if loop == "uvloop":
        import uvloop

        uvloop.install()  # as the worker (LOYALTY_LOOP)
    import faust
    from faust.transport.producer import ProducerBuffer

    from agents.batching import ClientTable, in_event
    from app.settings import Settings
    from app.stream import faust_patches

    app = faust.App(f"ceiling-{topic}", broker=f"kafka://{boot}", store="rocksdb://",
                    datadir=data_dir, autodiscover=False, topic_partitions=4,
                    consumer_auto_offset_reset="earliest", web_enabled=False,
                    key_serializer="raw", value_serializer="raw", stream_buffer_maxsize=16384,
                    broker_max_poll_records=2000, consumer_max_fetch_size=4 << 20,
                    producer_linger=0.0, producer_max_batch_size=256 * 1024,
                    broker_commit_every=10_000, table_standby_replicas=0)
    ProducerBuffer.max_messages = 10_000  # as the worker (LOYALTY_PRODUCER_BUFFER)
    faust_patches.apply(fast_drain, Settings.fetch_max_wait_ms)  # as the worker
    source = app.topic(topic, key_type=bytes, value_type=bytes)
    out = f"{topic}-out"
    table = app.Table("t", key_type=bytes, value_type=bytes, partitions=4,
                      options={"block_cache_size": 64 << 20})
    direct = ClientTable(app, table, direct=True)
    seen: dict[str, Any] = {"n": 0}

    @app.agent(source)
    async def drain(stream: Any) -> None:
        logging.getLogger().setLevel(logging.WARNING)
        async for batch in stream.take_events(500, within=0.05):
            if "wall" not in seen:
                seen["wall"], seen["cpu"] = time.perf_counter(), time.process_time()
            acks = []
            for event in batch:
                key, value = event.key, event.value
                if mode in ("table", "table+produce"):
                    with in_event(event):
                        table.get(key)
                        table[key] = value
                elif mode == "direct+produce":
                    direct.get(event, key)
                    await direct.set(event, key, value)
                if mode.endswith("produce"):
                    acks.append(await app.producer.send(out, key, value, None, None, None))
            if acks:
                await asyncio.gather(*acks)
            await direct.settle()
            seen["n"] += len(batch)
            if seen["n"] >= events:
                wall = time.perf_counter() - seen["wall"]
                cpu = time.process_time() - seen["cpu"]
                print("RESULT " + orjson.dumps({"mode": mode, "events": seen["n"],
                                                "events_per_s": round(seen["n"] / wall),
                                                "cpu_percent": round(cpu / wall * 100)}).decode(),
                      flush=True)
                os._exit(0)

    runner = faust.Worker(app, loglevel="WARNING", logfile=None, redirect_stdouts=False, quiet=True)
    runner.spinner = None  # as the worker: the spinner turns every debug() into a log record
    runner.execute_from_commandline()


async def _produce(boot: str, topic: str, events: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1), NewTopic(f"{topic}-out", 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=boot, linger_ms=5)
    await producer.start()
    try:
        for i in range(events):  # ~2,300 clients, a receipt-sized value
            value = orjson.dumps({"receipt_id": f"r-{i}", "client_id": f"c-{i % 2300}",
                                  "type": "sale", "total": "450.00",
                                  "items": [{"sku": "latte-l", "category": "coffee", "amount": "450.00"}]})
            await producer.send(topic, key=f"c-{i % 2300}".encode(), value=value)
        await producer.flush()
    finally:
        await producer.stop()


CREATED: list[str] = []  # topic name prefixes to drop at the end


def measure(mode: str, events: int, boot: str, fast_drain: bool, loop: str) -> dict[str, Any]:
    topic = f"ceiling-{uuid.uuid4().hex[:8]}"
    CREATED.extend([topic, f"ceiling-{topic}"])  # its own topics, then the Faust app's
    asyncio.run(_produce(boot, topic, events))
    with tempfile.TemporaryDirectory() as data_dir:
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--topic", topic,
                               "--events", str(events), "--bootstrap", boot, "--data-dir", data_dir,
                               "--loop", loop]
                              + (["--fast-drain"] if fast_drain else []),
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
    for line in proc.stdout.splitlines() + proc.stderr.splitlines():
        if "RESULT " in line:
            result: dict[str, Any] = orjson.loads(line.split("RESULT ", 1)[1])
            return result
    raise RuntimeError(f"{mode}: no result\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--mode", action="append", choices=MODES, help="default: all")
    ap.add_argument("--fast-drain", action="store_true", help="LOYALTY_FAST_DRAIN's consumer patch")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.topic, args.events, args.bootstrap, args.data_dir, args.fast_drain,
               args.loop)
        return
    from bench_stream import bootstrap

    boot = bootstrap()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        results = [measure(mode, args.events, boot, args.fast_drain, args.loop) for mode in args.mode or MODES]
    finally:  # the input, output and changelog topics of every run: "ceiling-<id>..."
        from tests.integration.harness import drop_test_data

        topics, _ = asyncio.run(drop_test_data(boot, None, sorted(set(CREATED))))
        print(f"bench-ceiling: dropped {topics} topics", file=sys.stderr)
    print(orjson.dumps({"machine": machine, "loop": args.loop, "fast_drain": args.fast_drain,
                        "results": results},
                       option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
