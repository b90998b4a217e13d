"""Replay throughput of the core: N simulated receipts, boostfeel + rfm, one process.

Prints receipts/s for the replay loop (parse, validate, apply, evaluate, time-based
changes, CloudEvent serialization), excluding the generation of the input. Usage:
    python bench/bench_core.py [--receipts 1000000] [--rules boostfeel --rules rfm]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime

import orjson

from app.replay import Replay
from app.simulate import SimConfig, generate
from rules import Engine, load_ruleset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=1_000_000)
    ap.add_argument("--rules", action="append", default=None)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rules = args.rules or ["boostfeel", "rfm"]
    clients = max(10, args.receipts * 2000 // 26_000)  # ~13 receipts per client over 90 days
    t0 = time.perf_counter()
    lines = list(generate(SimConfig(clients=clients, days=90, seed=args.seed)))[: args.receipts]
    gen = time.perf_counter() - t0
    engine = Engine([load_ruleset(r) for r in rules], tz="Europe/Moscow")
    out_bytes = 0

    def on_change(event: dict) -> None:
        nonlocal out_bytes
        out_bytes += len(orjson.dumps(event))

    rp = Replay(engine, datetime.fromisoformat("2026-06-15T00:00:00+00:00"), on_change, lambda r: None)
    t1 = time.perf_counter()
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    t2 = time.perf_counter()
    rows = rp.finish()
    t3 = time.perf_counter()
    st = rp.stats
    print(
        orjson.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "rules": rules,
                "receipts": len(lines),
                "clients": len(rows),
                "generated_in_s": round(gen, 1),
                "apply_s": round(t2 - t1, 2),
                "finish_s": round(t3 - t2, 2),
                "receipts_per_s": round(len(lines) / (t2 - t1)),
                "receipts_per_s_incl_finish": round(len(lines) / (t3 - t1)),
                "changes": st.changes,
                "changes_bytes": out_bytes,
                "rejected": st.rejected_total,
                "duplicates": st.duplicates,
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


if __name__ == "__main__":
    main()
