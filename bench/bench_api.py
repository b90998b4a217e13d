"""Latency of the POS lookup, GET /clients/{client_id}, under concurrent requests.

Runs against a running worker (``loyalty worker`` with data in its projection)::

    .venv/bin/python bench/bench_api.py --url http://127.0.0.1:6066 --token "$LOYALTY_API_TOKEN"

``--concurrency`` requests are in flight at every moment (closed loop: each of the N
connections sends its next request when the previous answer arrives), unless ``--rate``
is given: then requests are sent on a fixed schedule (open loop, R per second spread over
the connections) and latency is counted from the scheduled send time, so queueing in the
client is not hidden. Client ids are taken from the API's member lists (or ``--ids``).
Prints p50/p90/p99/max in milliseconds and the request rate; exit 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson


async def client_ids(session: aiohttp.ClientSession, url: str, want: int) -> list[str]:
    async with session.get(f"{url}/segments") as resp:
        resp.raise_for_status()
        dims = (await resp.json())["dimensions"]
    ids: set[str] = set()
    for dim, info in dims.items():
        for seg in info["segments"]:
            cursor: str | None = "0"
            while cursor is not None and len(ids) < want:
                async with session.get(f"{url}/segments/{dim}/{seg}/members",
                                       params={"cursor": cursor, "limit": "1000"}) as resp:
                    resp.raise_for_status()
                    page = await resp.json()
                ids.update(page["members"])
                cursor = page["next_cursor"]
        break  # one dimension holds every client
    return sorted(ids)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(headers=headers, connector=connector,
                                     timeout=timeout) as session:
        ids = args.ids.split(",") if args.ids else await client_ids(session, args.url, 5000)
        if not ids:
            raise SystemExit("no clients in the projection: load data first")
        rng = random.Random(1)
        latencies: list[float] = []
        errors = 0
        status: dict[int, int] = {}

        async def one(scheduled: float | None) -> None:
            nonlocal errors
            cid = ids[rng.randrange(len(ids))]
            started = time.perf_counter() if scheduled is None else scheduled
            try:
                async with session.get(f"{args.url}/clients/{cid}") as resp:
                    await resp.read()
                    status[resp.status] = status.get(resp.status, 0) + 1
                    if resp.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            latencies.append(time.perf_counter() - started)

        async def closed_loop(n: int) -> None:
            for _ in range(n):
                await one(None)

        async def open_loop(k: int, n: int, start: float) -> None:
            for i in range(n):
                at = start + (i * args.concurrency + k) / args.rate
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await one(at)

        async def phase(total: int) -> float:
            per = max(1, total // args.concurrency)
            t0 = time.perf_counter()
            if args.rate:
                await asyncio.gather(*(open_loop(k, per, t0 + 0.05) for k in range(args.concurrency)))
            else:
                await asyncio.gather(*(closed_loop(per) for _ in range(args.concurrency)))
            return time.perf_counter() - t0

        await phase(args.warmup)
        latencies.clear()
        errors = 0
        status.clear()
        elapsed = await phase(args.requests)
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=1000, method="inclusive")
    return {
        "endpoint": "GET /clients/{client_id}", "mode": "open" if args.rate else "closed",
        "concurrency": args.concurrency, "rate_target": args.rate or None,
        "requests": len(lat), "errors": errors, "status": {str(k): v for k, v in status.items()}, "clients": len(ids),
        "seconds": round(elapsed, 3), "requests_per_second": round(len(lat) / elapsed),
        "p50_ms": round(q[499] * 1000, 2), "p90_ms": round(q[899] * 1000, 2),
        "p99_ms": round(q[989] * 1000, 2), "max_ms": round(lat[-1] * 1000, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('LOYALTY_WEB_PORT', '6066')}")
    p.add_argument("--token", default=os.environ.get("LOYALTY_API_TOKEN", ""))
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--rate", type=float, default=0.0,
                   help="requests per second in total (open loop); 0: closed loop")
    p.add_argument("--ids", help="comma-separated client ids (default: from the API)")
    args = p.parse_args()
    args.url = args.url.rstrip("/")
    result = asyncio.run(run(args))
    print(orjson.dumps(result).decode())
    print(f"GET /clients/{{id}} {result['mode']} loop, concurrency {args.concurrency}: "
          f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  "
          f"({result['requests_per_second']} req/s, {result['errors']} errors)", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
