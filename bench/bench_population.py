"""Population snapshots: their cost per million clients, and replay with population rules.

Part 1 (``--clients``, default 1,000,000): client records built by the core from 1-4
receipts each over a year (boostfeel + rfm + rfm_quantiles + abc loaded), then, timed:

* ``aggregate``: every client's partial update at the snapshot instant (the metrics the
  statistics read), split over 8 partitions as the stream does, and the merge of the 8;
* ``bind``: the rule sets compiled with the snapshot's values (``Engine.set_population``);
* ``sweep``: every client evaluated against the snapshot (``Engine.catch_up``: cause
  ``population``), as the stream's sweep ticks and replay do;
* the aggregate's JSON size (what a partition publishes) and the process's peak RSS.

Part 2 (``--receipts``, default 200,000 simulated): ``loyalty replay``'s loop with
boostfeel + rfm, then with boostfeel + rfm + rfm_quantiles + abc (daily snapshots),
alternating ``--rounds`` times in one run; receipts/s of each and the ratio.

Usage:
    python bench/bench_population.py [--clients 1000000] [--receipts 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from datetime import datetime
from typing import Any

import orjson

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset, parse_receipt
from rules import population as pop
from rules.calendar import iso, to_epoch
from rules.metrics import MetricView

ALL = ["boostfeel", "rfm", "rfm_quantiles", "abc"]
START = to_epoch(datetime.fromisoformat("2025-06-01T00:00:00+00:00"))
AS_OF = START + 365 * 86_400


def _clients(engine: Engine, n: int, seed: int = 1) -> list[Any]:
    rnd = random.Random(seed)
    states = []
    for c in range(n):
        state = None
        at = START + rnd.randrange(300) * 86_400
        for k in range(rnd.choice((1, 1, 2, 3, 4))):
            total = f"{rnd.randrange(100, 20_000)}.{rnd.randrange(100):02d}"
            r = parse_receipt({"receipt_id": f"r{c}-{k}", "client_id": f"c{c:07d}", "type": "sale",
                               "occurred_at": iso(at), "total": total}, None)
            state = engine.receipt(state, r).state
            at += rnd.randrange(1, 30) * 86_400
        states.append(state)
    return states


def part1(n: int) -> None:
    engine = Engine([load_ruleset(r) for r in ALL])
    started = time.perf_counter()
    states = _clients(engine, n)
    built = time.perf_counter() - started
    for s in states:  # time-based changes up to the snapshot: the sweep is the snapshot's own
        engine.advance(s, AS_OF)
    spec = engine.spec
    started = time.perf_counter()
    parts = [pop.initialize(spec) for _ in range(8)]
    for i, s in enumerate(states):
        pop.update(spec, parts[i % 8], MetricView(s, AS_OF, engine.cal))
    updated = time.perf_counter() - started
    started = time.perf_counter()
    agg = pop.initialize(spec)
    for part in parts:
        agg = pop.merge(spec, agg, part)
    snap = pop.snapshot(spec, AS_OF, agg)
    merged = time.perf_counter() - started
    assert snap is not None
    started = time.perf_counter()
    engine.set_population(snap)
    bound = time.perf_counter() - started
    started = time.perf_counter()
    events = 0
    for s in states:
        events += len(engine.catch_up(s))
    swept = time.perf_counter() - started
    size = max(len(orjson.dumps(p)) for p in parts)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_m = 1_000_000 / n
    print(f"clients: {n:,} (built in {built:.1f} s), statistics: {len(spec.stats)} in {len(spec.parts)} parts")
    print(f"aggregate: {updated:.2f} s ({updated / n * 1e6:.1f} us/client, {updated * per_m:.1f} s per 1M); "
          f"merge of 8: {merged * 1000:.1f} ms; largest partial: {size / 1024:.1f} KiB")
    print(f"bind: {bound * 1000:.1f} ms; sweep: {swept:.2f} s ({swept / n * 1e6:.1f} us/client, "
          f"{swept * per_m:.1f} s per 1M), {events:,} change events")
    print(f"peak RSS: {rss:.0f} MiB ({rss * per_m:.0f} MiB per 1M clients, records included)")


def _replay(lines: list[bytes], rules: list[str]) -> tuple[float, int, int]:
    engine = Engine([load_ruleset(r) for r in rules])
    rp = Replay(engine, datetime.fromisoformat("2026-06-01T00:00:00+03:00"), lambda _: None, lambda _: None)
    started = time.perf_counter()
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    rp.finish()
    return time.perf_counter() - started, rp.stats.changes, rp.stats.snapshots


def part2(receipts: int, rounds: int) -> None:
    clients = max(100, receipts // 30)
    lines = list(generate(SimConfig(clients=clients, days=90, seed=5)))[:receipts]
    print(f"replay: {len(lines):,} simulated receipts, {clients:,} clients, 90 days, daily snapshots")
    results: dict[str, list[float]] = {"boostfeel+rfm": [], "+rfm_quantiles+abc": []}
    for _ in range(rounds):
        for name, rules in (("boostfeel+rfm", ALL[:2]), ("+rfm_quantiles+abc", ALL)):
            seconds, changes, snaps = _replay(lines, rules)
            results[name].append(len(lines) / seconds)
            print(f"  {name:20s} {len(lines) / seconds:8,.0f} receipts/s  ({changes:,} changes, {snaps} snapshots)")
    base = sum(results["boostfeel+rfm"]) / rounds
    more = sum(results["+rfm_quantiles+abc"]) / rounds
    print(f"mean: boostfeel+rfm {base:,.0f}/s, with rfm_quantiles+abc {more:,.0f}/s: ratio {more / base:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--receipts", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.receipts:
        part2(args.receipts, args.rounds)
    if args.clients:
        part1(args.clients)


if __name__ == "__main__":
    main()
