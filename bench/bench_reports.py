"""Period reports at scale: the cost of counting a receipt fact, the bytes of the per-client keys
and the latency of each report (``python bench/bench_reports.py``).

Fills a fresh namespace of the local Redis through the projection's ``COUNT`` script
(``periods.count``, as the projector does) with the receipt facts of ``--clients`` synthetic
clients over ``--days`` days (a visit every ~``--every`` days on average, exponential; 3% of
receipts are returns), one boostfeel segment at each receipt, and gives every client its
current segment (one change each, ``Projection.apply``). Prints:

* the count rate with the per-client keys (``pc:``/``pv:``/``pcur``) and without them (the
  previous ``COUNT``, both by EVALSHA, on the first ``--sample`` facts in another namespace),
  hence the extra microseconds per fact;
* Redis's memory per client-day of ``pc:``, ``pv:`` and ``pa:`` (MEMORY USAGE of every key,
  divided by its entries), and per receipt of ``pseen:``;
* the latency of the per-client report (first JSON page of 100; every row, as the CSV
  export reads them; a segment's members) for the last 30 days, and of the monthly and weekly
  period reports with each attribution, median of ``--repeat`` runs.

Drops the namespaces at the end (not with ``--namespace``: filled once, then only queried).
Resets Redis's command statistics (CONFIG RESETSTAT) to read the script's own time per call.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

from bench_history import timed  # bench scripts run with bench/ on sys.path

from app.projection import period_clients as pc
from app.projection import periods
from app.projection.store import Projection, Update, drop_generation, namespace

SEGS = ["other", "potentially_loyal", "loyal", "vip", "at_risk", "lost"]
WEIGHTS = (4, 3, 3, 1, 3, 2)
END = 1_780_000_000  # 2026-05-28
DAY = 86_400
# The COUNT of the previous version: no per-client keys, no currency (pairs from ARGV[9]).
OLD_COUNT = "\n".join(line for line in periods.COUNT.splitlines()
                      if "'pc:'" not in line and "'pv:'" not in line and "'pcur'" not in line
                      ).replace("for i = 10,", "for i = 9,")


def facts(n: int, days: int, every: float, rng: random.Random) -> list[periods.Fact]:
    out: list[periods.Fact] = []
    for c in range(n):
        cid = f"c-{c:07d}"
        t = END - days * DAY + int(rng.expovariate(1 / (every * DAY)))
        while t < END:
            sale = rng.random() >= 0.03
            cents = rng.randrange(200, 20_000)
            seg = rng.choices(SEGS, WEIGHTS)[0]
            out.append(periods.Fact(f"r-{len(out)}", cid, t, sale, cents if sale else -cents,
                                    (("boostfeel", seg),), "EUR"))
            t += int(rng.expovariate(1 / (every * DAY))) + 1
    out.sort(key=lambda f: f.at)  # the topic's order, across clients
    return out


async def server_us(proj: Projection) -> float:
    """Redis's own microseconds per EVALSHA since the last CONFIG RESETSTAT."""
    stats = await proj.redis.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


async def count_rate(proj: Projection, rows: list[periods.Fact], script: str | None = None) -> float:
    """Microseconds per fact, counted in batches of 2,000 (``script``: another COUNT)."""
    p, cal = await proj.prefix_now(), proj.days.cal
    await proj.redis.config_resetstat()
    started = time.perf_counter()
    for n in range(0, len(rows), 2000):
        if script is None:
            await periods.count(proj.redis, p, rows[n:n + 2000], cal)
            continue
        sha = proj.redis.register_script(script)
        pipe = proj.redis.pipeline(transaction=False)
        for f in rows[n:n + 2000]:
            day = periods.day_of(cal, f.at)
            await sha(args=[p, day, f.receipt_id, f.client_id, f.cents, int(f.sale), f.at, day.replace("-", ""),
                            *(x for seg in f.segments for x in seg)], client=pipe)
        await pipe.execute()
    return (time.perf_counter() - started) / len(rows) * 1e6


async def memory(proj: Projection, kind: str) -> tuple[int, int]:
    """Bytes and entries of every ``<kind>:<day>`` key."""
    p, r = await proj.prefix_now(), proj.redis
    total = entries = 0
    async for key in r.scan_iter(match=f"{p}{kind}:*", count=1000):
        total += await r.memory_usage(key, samples=0) or 0
        entries += await (r.scard(key) if kind in ("pa", "pseen") else r.hlen(key))
    return total, entries


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    proj = Projection.from_url(args.redis, namespace(args.namespace or f"bench-reports-{uuid.uuid4().hex[:8]}"), "UTC")
    old = Projection.from_url(args.redis, namespace(f"bench-reports-old-{uuid.uuid4().hex[:8]}"), "UTC")
    try:
        p = await proj.prefix_now()
        if not await proj.redis.exists(f"{p}pdays"):
            rows = facts(args.clients, args.days, args.every, rng)
            sample = rows[:args.sample]
            before: list[float] = []
            after: list[float] = []
            server: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.rounds):  # alternating, each into an empty namespace
                for script, out, name in ((OLD_COUNT, before, "before"), (None, after, "after")):
                    await drop_generation(old.redis, old.ns + ":")
                    out.append(await count_rate(old, sample, script))
                    server[name].append(await server_us(old))
            b, a = statistics.median(before), statistics.median(after)
            sb, sa = statistics.median(server["before"]), statistics.median(server["after"])
            print(f"COUNT in Redis (INFO commandstats, median of {args.rounds}): {sb:.2f} us/fact before, "
                  f"{sa:.2f} us/fact with pc/pv/pcur ({sa - sb:+.2f} us)")
            started = time.perf_counter()
            await count_rate(proj, rows)
            took = time.perf_counter() - started
            print(f"{args.clients} clients, {len(rows):,} facts over {args.days} days counted in {took:.0f} s "
                  f"({took / len(rows) * 1e6:.1f} us/fact); COUNT on the first {len(sample):,}, median of "
                  f"{args.rounds} alternating rounds: {b:.1f} us/fact before, {a:.1f} us/fact with pc/pv/pcur "
                  f"({a - b:+.1f} us; rounds {', '.join(f'{x:.1f}' for x in before)} / "
                  f"{', '.join(f'{x:.1f}' for x in after)})")
            ups = [Update(f"c-{c:07d}", "boostfeel", rng.choices(SEGS, WEIGHTS)[0], "", END - rng.randrange(90 * DAY))
                   for c in range(args.clients)]
            for n in range(0, len(ups), 2000):
                await proj.apply(ups[n:n + 2000])
        for kind in ("pc", "pv", "pa", "pseen"):
            total, entries = await memory(proj, kind)
            what = "receipt" if kind == "pseen" else "client-day"
            print(f"{kind}: {total / max(entries, 1):.0f} bytes per {what} ({entries:,} entries, {total / 1e6:.1f} MB)")
        end = date(2026, 5, 28)
        month = periods.day_labels((end - timedelta(days=30), end))
        r, cal = proj.redis, proj.days.cal
        questions: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("clients, last 30 days: first page of 100", lambda: pc.client_page(r, p, month, "boostfeel", None, "",
                                                                                 100)),
            ("  every row (the CSV export)", lambda: _all(pc.iter_clients(r, p, month, "boostfeel", None))),
            ("clients of segment vip (all members): first page", lambda: pc.client_page(
                r, p, month, "boostfeel", "vip", "", 100)),
            ("  every row", lambda: _all(pc.iter_clients(r, p, month, "boostfeel", "vip"))),
            ("period report, 3 months by month, purchase", lambda: periods.report(
                r, p, date(2026, 3, 1), date(2026, 6, 1), "month", cal)),
            ("  the same, attribution current", lambda: periods.report(
                r, p, date(2026, 3, 1), date(2026, 6, 1), "month", cal, None, "current")),
            ("period report, 13 weeks, purchase", lambda: periods.report(
                r, p, date(2026, 2, 23), date(2026, 5, 25), "week", cal)),
            ("  the same, attribution current", lambda: periods.report(
                r, p, date(2026, 2, 23), date(2026, 5, 25), "week", cal, None, "current")),
        ]
        for name, fn in questions:
            ms, result = await timed(fn, args.repeat)
            size = len(result[0]) if isinstance(result, tuple) else len(result)
            print(f"{name:52s} {ms:9.1f} ms  ({size} rows)")
    finally:
        if not args.namespace:
            await drop_generation(proj.redis, proj.ns + ":")
        await drop_generation(old.redis, old.ns + ":")
        await proj.close()
        await old.close()


async def _all(it: Any) -> list[Any]:
    return [row async for chunk in it for row in chunk]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=120, help="days of receipts before the end")
    ap.add_argument("--every", type=float, default=14.0, help="mean days between a client's visits")
    ap.add_argument("--sample", type=int, default=50_000, help="facts counted with both COUNT scripts")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both COUNT scripts")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--namespace", help="app id to fill once and keep (later runs only query it; drop it "
                    "yourself: loyalty:<app id>:*)")
    asyncio.run(main(ap.parse_args()))
