"""Predictive models: the population step and the per-client metrics.

1. **Fit.** N synthetic clients drawn from the BG/NBD process itself (lambda ~ Gamma(r,
   alpha), dropout p ~ Beta(a, b) after each purchase day, first purchases spread over
   ``--years``, spend per purchase day ~ Gamma-Gamma) are folded into the models' aggregate
   (:mod:`rules.predict.snapshot`) in 8 partitions, merged, and fitted. Prints the time of
   each step, the number of groups, the aggregate's JSON size per partition, and the
   fitted parameters next to the true ones.
2. **Metrics.** The cost of the four predictive metrics for one client (µs), against the
   cost of boostfeel's metrics on the same clients.
3. **Replay.** Receipts/s of ``loyalty replay``'s loop with boostfeel + rfm, then with
   churn_risk added, on the same simulated receipts in the same run (weekly snapshots).

Usage:
    python bench/bench_predictive.py [--clients 100000 --clients 1000000] [--receipts 200000]
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime

import numpy as np
import orjson

from app.batch.order import DEFAULT_MEMORY
from app.batch.replay import Replay, time_order
from app.batch.simulate import SimConfig, generate
from rules import Engine, load_ruleset
from rules.calendar import BusinessCalendar
from rules.metrics import MetricView
from rules.metrics.predictive import NAMES
from rules.predict import snapshot as predict
from rules.record.state import ClientState

TRUE = {"r": 0.243, "alpha": 30.9, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 1544.0}


def synthetic(n: int, years: float, seed: int = 1) -> list[tuple[int, int, int, int, int]]:
    """(x, t_x, T, n, mean cents) of n clients drawn from BG/NBD + Gamma-Gamma."""
    rng = np.random.default_rng(seed)
    horizon = int(365 * years)
    lam = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], n)
    p = rng.beta(TRUE["a"], TRUE["b"], n)
    nu = rng.gamma(TRUE["q"], 1 / TRUE["v"], n)
    big_t = rng.integers(0, horizon, n)
    out = []
    for i in range(n):
        t, days = 0.0, {0}
        while True:
            t += rng.exponential(1 / lam[i])
            if t > big_t[i]:
                break
            days.add(int(t))
            if rng.random() < p[i]:
                break
        x = len(days) - 1
        spend = rng.gamma(TRUE["p"], 1 / nu[i], x + 1).mean() if x >= 0 else 0.0
        out.append((x, max(days), int(big_t[i]), x + 1, max(1, round(spend))))
    return out


def bench_fit(n: int, years: float) -> None:
    t0 = time.perf_counter()
    clients = synthetic(n, years)
    gen = time.perf_counter() - t0
    shards = [predict.initialize() for _ in range(8)]
    t0 = time.perf_counter()
    for i, c in enumerate(clients):
        predict.update(shards[i % 8], c)
    fold = time.perf_counter() - t0
    size = max(len(orjson.dumps(s)) for s in shards)
    t0 = time.perf_counter()
    agg = shards[0]
    for s in shards[1:]:
        agg = predict.merge(agg, s)
    merge = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitted = predict.result(agg)
    fit = time.perf_counter() - t0
    print(f"fit: {n:,} clients over {years} years (generated in {gen:.1f} s)")
    print(f"  fold {fold / n * 1e6:.2f} µs/client, merge of 8 partitions {merge * 1e3:.0f} ms, "
          f"groups {fitted['groups']:,}, largest partition aggregate {size / 1024:.0f} KiB JSON")
    print(f"  fit (BG/NBD + MBG/NBD + Gamma-Gamma) {fit:.2f} s")
    for name in ("bgnbd", "mbgnbd", "gamma_gamma"):
        print(f"  {name}: {fitted[name]}")
    print(f"  true: {TRUE}")


def bench_metrics(receipts: int) -> None:
    lines = list(generate(SimConfig(clients=max(200, receipts // 40), days=180, seed=3)))[:receipts]
    eng = Engine([load_ruleset("churn_risk"), load_ruleset("boostfeel")], tz="UTC")
    rp = Replay(eng, datetime.fromisoformat("2026-06-29T00:00:00+00:00"), lambda e: None, lambda _: None,
                cadence="week")
    time_order(rp, [("receipts", enumerate(lines, 1))], DEFAULT_MEMORY)
    rp.finish()
    models = eng.models_at(2**40)
    cal = BusinessCalendar("UTC")
    states: list[ClientState] = list(rp.states.values())
    at = int(datetime.fromisoformat("2026-06-29T00:00:00+00:00").timestamp())
    boost = sorted({m for _, d in eng.dims if d.id == "boostfeel" for m in d.metrics})
    for label, names in (("predictive (4)", NAMES), (f"boostfeel ({len(boost)})", tuple(boost))):
        t0 = time.perf_counter()
        for s in states:
            view = MetricView(s, at, cal, models)
            for name in names:
                view.raw(name)
        dt = time.perf_counter() - t0
        print(f"metrics: {label}: {dt / len(states) * 1e6:.1f} µs per client ({len(states)} clients)")


def bench_replay(receipts: int) -> None:
    lines = list(generate(SimConfig(clients=max(200, receipts // 40), days=365, seed=5)))[:receipts]
    as_of = datetime.fromisoformat("2027-01-04T00:00:00+00:00")
    for rules in (["boostfeel", "rfm"], ["boostfeel", "rfm", "churn_risk"]) * 2:
        eng = Engine([load_ruleset(r) for r in rules], tz="UTC")
        events: list[dict[str, object]] = []
        rp = Replay(eng, as_of, events.append, lambda _: None, cadence="week")
        t0 = time.perf_counter()
        time_order(rp, [("receipts", enumerate(lines, 1))], DEFAULT_MEMORY)
        rp.finish()
        dt = time.perf_counter() - t0
        print(f"replay {'+'.join(rules)}: {len(lines) / dt:,.0f} receipts/s, {len(events):,} events, "
              f"{rp.stats.snapshots} snapshots")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, action="append")
    ap.add_argument("--years", type=float, default=3.0)
    ap.add_argument("--receipts", type=int, default=200_000)
    ap.add_argument("--skip", action="append", default=[], choices=("fit", "metrics", "replay"))
    args = ap.parse_args()
    if "fit" not in args.skip:
        for n in args.clients or [100_000, 1_000_000]:
            bench_fit(n, args.years)
    if "metrics" not in args.skip:
        bench_metrics(args.receipts)
    if "replay" not in args.skip:
        bench_replay(args.receipts)


if __name__ == "__main__":
    main()
