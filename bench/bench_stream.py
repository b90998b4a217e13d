"""Streaming benchmark on the real local broker: simulator -> Kafka -> one worker process.

1. Throughput: N simulated receipts are produced first, then one worker (boostfeel + rfm,
   changelog on) drains them; receipts/s = N / (last - first receipt-caused change event),
   from the Kafka timestamps of the change events (the time-based changes of clients whose
   due instant has passed follow on the due timer; their span is printed too).
   ``--workers N`` starts N worker processes of the same app instead (one after the other,
   so the span includes their rebalance).
2. Latency: a fresh worker, once a probe receipt has come through (start-up excluded),
   gets live receipts at --rate receipts/s (new clients, so every receipt yields a change
   event); latency = change event timestamp - receipt timestamp (both Kafka CreateTime).
3. Ceiling: a raw aiokafka + orjson consumer over the same receipts topic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.batch.simulate import SimConfig, generate
from app.settings import Settings
from tests.integration.harness import (
    CREATED,
    Worker,
    drop_test_data,
    free_port,
    produce_lines,
    read_topic,
    unique_env,
)


def bootstrap() -> str:
    import subprocess

    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([str(root / "deploy/local/kafka.sh"), "start"], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


async def raw_consume(boot: str, topic: str, expected: int) -> float:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    n, started = 0, None
    try:
        while n < expected:
            batch = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            if not batch:
                break
            if started is None:
                started = time.perf_counter()
            for records in batch.values():
                for r in records:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        orjson.loads(r.value)
                    n += 1
    finally:
        await consumer.stop()
    return n / (time.perf_counter() - (started or time.perf_counter()))


EXTRA: dict[str, str] = {"LOYALTY_RULES": "boostfeel,rfm"}  # --env LOYALTY_RULES=... overrides


def throughput(boot: str, tmp: Path, n: int, workers: int = 1) -> dict[str, float]:
    clients = max(10, n * 2000 // 26_000)
    lines = list(generate(SimConfig(clients=clients, days=90, seed=9)))[:n]
    env = unique_env(boot, tmp / "tp", LOYALTY_CLOCK="2026-06-15T00:00:00Z",
                     LOYALTY_PARTITIONS="4", **EXTRA)
    # more workers: the same app (one consumer group), each its own data dir and port
    ws = [Worker({**env, "LOYALTY_DATA_DIR": str(tmp / f"tp{i}"), "LOYALTY_WEB_PORT": str(free_port())}
                 if i else env, tmp / f"tp{i}.log") for i in range(workers)]
    s = ws[0].settings
    produce_lines(s, lines)
    last_count, stable = -1, 0
    try:
        for w in ws:
            w.start()
        while stable < 3:
            time.sleep(3)
            records = read_topic(s, s.topic_changes)
            stable = stable + 1 if len(records) == last_count else 0
            last_count = len(records)
    finally:
        for w in ws:
            w.stop()
    stamps = sorted(r.timestamp for r in records)
    # receipts/s: over the span of the receipt-caused changes (time-based changes of clients
    # whose due instant passed follow the drain on the due timer and are not receipts)
    by_receipt = sorted(r.timestamp for r in records if orjson.loads(r.value)["data"]["cause"] == "receipt")
    seconds = (by_receipt[-1] - by_receipt[0]) / 1000
    raw = asyncio.run(raw_consume(boot, s.topic_receipts, len(lines)))
    return {"workers": workers, "receipts": len(lines), "change_events": len(records),
            "receipt_change_events": len(by_receipt), "seconds": round(seconds, 1),
            "receipts_per_s": round(len(lines) / seconds),
            "all_changes_seconds": round((stamps[-1] - stamps[0]) / 1000, 1),
            "raw_aiokafka_orjson_per_s": round(raw)}


def latency(boot: str, tmp: Path, rate: float, seconds: float) -> dict[str, float | None]:
    w = Worker(unique_env(boot, tmp / f"lat{rate:.0f}", LOYALTY_PARTITIONS="4",
                          **EXTRA),
               tmp / f"lat{rate:.0f}.log")
    s = w.settings
    w.start()
    rng = random.Random(3)

    def live() -> Iterator[bytes]:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            n += 1
            yield orjson.dumps({"receipt_id": f"lat-{n}", "client_id": f"n-{n}-{rng.randrange(10**6)}",
                                "occurred_at": datetime.now(UTC).isoformat(), "type": "sale",
                                "total": f"{rng.randrange(100, 900)}.00",
                                "items": [{"category": "coffee", "amount": "100.00"}]})

    try:
        # warm-up: the clock starts once a probe receipt has come out as a change event, so
        # partition assignment and table recovery after start-up are not counted as latency
        probe = orjson.dumps({"receipt_id": "probe", "client_id": "probe", "type": "sale", "total": "1.00",
                              "occurred_at": datetime.now(UTC).isoformat()})
        produce_lines(s, [probe])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not read_topic(s, s.topic_changes):
            time.sleep(0.5)
        produce_lines(s, live(), rate=rate)
        time.sleep(10)
        sent = {orjson.loads(r.value)["receipt_id"]: r.timestamp for r in read_topic(s, s.topic_receipts)}
        sent.pop("probe", None)
        lat = []
        for r in read_topic(s, s.topic_changes):
            e = orjson.loads(r.value)
            rid = e["data"].get("receipt_id")
            if rid in sent and e["data"]["dimension"] == "boostfeel":
                lat.append(r.timestamp - sent[rid])
    finally:
        w.stop()
    lat.sort()
    return {"rate": rate, "seconds": seconds, "receipts": len(sent), "measured": len(lat),
            "p50_ms": lat[len(lat) // 2] if lat else None,
            "p99_ms": lat[int(len(lat) * 0.99)] if lat else None,
            "max_ms": lat[-1] if lat else None,
            "mean_ms": round(statistics.fmean(lat), 1) if lat else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=100_000)
    ap.add_argument("--rate", type=float, action="append", default=None)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes sharing the 4 partitions (throughput run only)")
    ap.add_argument("--fast-drain", action="store_true", help="LOYALTY_FAST_DRAIN=true (opt-in patch)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra worker environment, e.g. LOYALTY_SCENARIOS=none")
    args = ap.parse_args()
    EXTRA.update(kv.split("=", 1) for kv in args.env)
    if args.fast_drain:
        EXTRA["LOYALTY_FAST_DRAIN"] = "true"
    boot = bootstrap()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
            result = {"fast_drain": args.fast_drain, "machine": machine, "rules": EXTRA["LOYALTY_RULES"],
                      "throughput": throughput(boot, tmp, args.receipts, args.workers),
                      "latency": [latency(boot, tmp, r, args.seconds) for r in (args.rate or [1000, 5000])]}
    finally:  # the workers' topics and Redis keys: repeated runs must not fill the broker and Redis
        redis_url = EXTRA.get("REDIS_URL") or os.environ.get("REDIS_URL") or Settings.from_env().redis_url
        topics, keys = asyncio.run(drop_test_data(boot, redis_url, CREATED))
        print(f"bench-stream: dropped {topics} topics and {keys} Redis keys", file=sys.stderr)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
