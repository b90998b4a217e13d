"""Membership history at scale: bytes per client and query latency (``python bench/bench_history.py``).

Fills a fresh namespace of the local Redis through the projection's change script
(``Projection.apply``, as the projector does) with ``--clients`` synthetic clients of one
dimension: first segmented at a random instant of the ``--days`` before the end, then a
change every ~``--every`` days on average (exponential) to another of six boostfeel
segments. Prints the write rate, the packed history's bytes per client, Redis's memory for
the history (the hash field, measured by MEMORY USAGE with and without it on a sample, plus
the index keys), and the latency of each question (first JSON page of 100, and the whole
answer), median of ``--repeat`` runs. Drops the namespace at the end (not with ``--namespace``:
filled once, then only queried).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from app.projection import history_reads as reads
from app.projection.store import Projection, Update, drop_generation, namespace

SEGS = ["other", "potentially_loyal", "loyal", "vip", "at_risk", "lost"]
END = 1_780_000_000  # 2026-05-28
DAY = 86_400


def changes(n: int, days: int, every: float, rng: random.Random) -> list[Update]:
    out: list[Update] = []
    for c in range(n):
        cid = f"c-{c:07d}"
        t = END - rng.randrange(days * DAY)
        cur = ""
        while t < END:
            to = rng.choices([s for s in SEGS if s != cur], [w for s, w in zip(SEGS, (4, 3, 3, 1, 3, 2), strict=True)
                                                             if s != cur])[0]
            out.append(Update(cid, "boostfeel", to, cur, t))
            cur = to
            t += int(rng.expovariate(1 / (every * DAY))) + 1
    out.sort(key=lambda u: u.at)  # the topic's order, across clients
    return out


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, Any]:
    runs = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000, result


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    proj = Projection.from_url(args.redis, namespace(args.namespace or f"bench-history-{uuid.uuid4().hex[:8]}"),
                               "UTC")
    proj.history_days = args.keep
    try:
        ups = changes(args.clients, args.days, args.every, rng)
        if not await proj.redis.exists(f"{await proj.prefix_now()}hfirst:boostfeel"):
            started = time.perf_counter()
            for n in range(0, len(ups), 2000):
                await proj.apply(ups[n:n + 2000])
            took = time.perf_counter() - started
            print(f"{args.clients} clients, {len(ups)} changes applied in {took:.1f} s ({len(ups) / took:,.0f}/s)")
        p = await proj.prefix_now()
        r = proj.redis
        ids = [f"c-{c:07d}" for c in range(args.clients)]
        packed = 0
        for n in range(0, len(ids), 5000):
            pipe = r.pipeline(transaction=False)
            for cid in ids[n:n + 5000]:
                pipe.hstrlen(f"{p}c:{cid}", "boostfeel:h")
            packed += sum(await pipe.execute())
        sample = rng.sample(ids, min(1000, len(ids)))
        with_h = without = 0
        for cid in sample:
            row = await r.hgetall(f"{p}c:{cid}")
            with_h += await r.memory_usage(f"{p}c:{cid}", samples=0) or 0
            tmp = f"{p}tmp:{cid}"
            await r.hset(tmp, mapping={k: v for k, v in row.items() if k != b"boostfeel:h"})
            without += await r.memory_usage(tmp, samples=0) or 0
            await r.delete(tmp)
        index = 0
        async for key in r.scan_iter(match=f"{p}h*"):
            index += await r.memory_usage(key, samples=0) or 0
        print(f"packed history: {packed / len(ids):.0f} bytes per client (mean); hash field in Redis: "
              f"{(with_h - without) / len(sample):.0f} bytes per client; indexes (hix, hfirst, hcode, hname): "
              f"{index / len(ids):.0f} bytes per client")
        q_from, q_to = END - 150 * DAY, END - 60 * DAY
        vip, lapsed = frozenset({"vip"}), frozenset({"at_risk", "lost"})
        questions: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("was vip in a quarter, at_risk/lost now: first page", lambda: reads.was_page(
                proj, "boostfeel", vip, q_from, q_to, None, lapsed, "", 100)),
            ("  the same, every client", lambda: _all(reads.iter_was(proj, "boostfeel", vip, q_from, q_to, None,
                                                                     lapsed))),
            ("entered at_risk in a month: first page", lambda: reads.entered_page(
                proj, "boostfeel", frozenset({"at_risk"}), END - 30 * DAY, END, "", 100)),
            ("  the same, every client", lambda: _all(reads.iter_entered(
                proj, "boostfeel", frozenset({"at_risk"}), END - 30 * DAY, END))),
            ("stays in vip", lambda: reads.stays(proj, "boostfeel", vip, END)),
            ("cohorts, 12 months x 0..12", lambda: reads.cohorts(
                proj, "boostfeel", frozenset({"vip", "loyal", "potentially_loyal"}),
                proj.days.cal.month(END) - 11, proj.days.cal.month(END), 12, END)),
        ]
        for name, fn in questions:
            ms, result = await timed(fn, args.repeat)
            size = len(result[0]) if isinstance(result, tuple) else len(result) if isinstance(result, list) else \
                result.get("completed", {}).get("count", "")
            print(f"{name:55s} {ms:9.1f} ms  ({size} rows/stays)")
    finally:
        if not args.namespace:
            await drop_generation(proj.redis, proj.ns + ":")
        await proj.close()


async def _all(it: Any) -> list[Any]:
    return [row async for row in it]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=730, help="first segmentation within these days before the end")
    ap.add_argument("--every", type=float, default=30.0, help="mean days between a client's changes")
    ap.add_argument("--keep", type=int, default=730, help="LOYALTY_HISTORY_DAYS")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--namespace", help="app id to fill once and keep (later runs only query it; drop it "
                    "yourself: loyalty:<app id>:*)")
    asyncio.run(main(ap.parse_args()))
