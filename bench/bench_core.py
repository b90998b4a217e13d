"""Replay throughput of the core: N simulated receipts, boostfeel + rfm, one process.

Prints receipts/s for the replay loop (parse, validate, apply, evaluate, time-based
changes, CloudEvent serialization), excluding the generation of the input. Then, on the
same lines, what the stages cost alone (µs per receipt):

* ``decode_validate``: ``parse_receipt(loads(line))``;
* ``apply``: folding the parsed receipts into fresh client records, no evaluation;
* ``contract_floor``: the least any implementation of the receipt and CloudEvents
  contract does per receipt in CPython, with no client state and no rules: orjson decode,
  the timestamp parsed and bounded, the total and item amounts parsed exactly, an 8-byte
  hash of the receipt id, and as many change events as the replay published per receipt
  (real ones: ``segment_changed`` with metrics sampled from the run), orjson-encoded.

Usage:
    python bench/bench_core.py [--receipts 1000000] [--rules boostfeel --rules rfm] [--no-stages]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import time
from datetime import datetime
from typing import Any

import orjson

from app.batch.replay import Replay
from app.batch.simulate import SimConfig, generate
from rules import Engine, RejectedInput, load_ruleset, loads, parse_receipt
from rules.calendar import BusinessCalendar
from rules.events import segment_changed
from rules.inputs.receipts import _plain_money
from rules.record.state import ClientState, apply_receipt, initialize, receipt_hash

SAMPLE_EVERY = 97  # change events kept as samples for the contract floor


def stage_decode_validate(lines: list[bytes], now: datetime) -> float:
    t0 = time.perf_counter()
    for line in lines:  # results dropped: keeping 1M receipts would add GC time the loop has not
        with contextlib.suppress(RejectedInput):
            parse_receipt(loads(line), now)
    return time.perf_counter() - t0


def stage_apply(lines: list[bytes], now: datetime, tz: str) -> float:
    receipts = []
    for line in lines:
        with contextlib.suppress(RejectedInput):
            receipts.append(parse_receipt(loads(line), now))
    gc.freeze()  # the parsed input is not part of the stage
    cal = BusinessCalendar(tz)
    states: dict[str, ClientState] = {}
    t0 = time.perf_counter()
    for r in receipts:
        cid = r.client_id
        if cid is None:
            continue
        state = states.get(cid) or initialize(cid)
        with contextlib.suppress(RejectedInput):
            states[cid] = apply_receipt(state, r, cal)[0]
    elapsed = time.perf_counter() - t0
    gc.unfreeze()
    return elapsed


def stage_contract_floor(lines: list[bytes], now: datetime, samples: list[dict[str, Any]],
                         events_per_receipt: float) -> float:
    bound = int(now.timestamp()) + 86_400
    owed = 0.0
    n = 0
    t0 = time.perf_counter()
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("receipt_id"), str):
            continue
        try:
            at = datetime.fromisoformat(obj["occurred_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if at.utcoffset() is None or not 946_684_800 <= int(at.timestamp()) < bound:
            continue
        total = _plain_money(obj.get("total"), 2)
        for item in obj.get("items") or ():
            total = _plain_money(item.get("amount"), 2) if isinstance(item, dict) else None
        if total is None:
            continue
        receipt_hash(obj["receipt_id"])
        owed += events_per_receipt
        while owed >= 1.0:
            owed -= 1.0
            d = samples[n % len(samples)]["data"]
            n += 1
            orjson.dumps(segment_changed(
                client_id=d["client_id"], dimension=d["dimension"], ruleset=d["ruleset"],
                version=d["rules_version"], at=int(at.timestamp()), from_=d["from"], to=d["to"],
                rule=d["rule"], cause=d["cause"], metrics=d["metrics"],
                receipt_id=d.get("receipt_id")))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--receipts", type=int, default=1_000_000)
    ap.add_argument("--rules", action="append", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-stages", action="store_true", help="only the replay loop")
    args = ap.parse_args()
    rules = args.rules or ["boostfeel", "rfm"]
    clients = max(10, args.receipts * 2000 // 26_000)  # ~13 receipts per client over 90 days
    t0 = time.perf_counter()
    lines = list(generate(SimConfig(clients=clients, days=90, seed=args.seed)))[: args.receipts]
    gen = time.perf_counter() - t0
    engine = Engine([load_ruleset(r) for r in rules], tz="Europe/Moscow")
    out_bytes = 0
    samples: list[dict[str, Any]] = []

    def on_change(event: dict[str, Any]) -> None:
        nonlocal out_bytes
        out_bytes += len(orjson.dumps(event))
        if len(samples) < 5000 and rp.stats.changes % SAMPLE_EVERY == 0:
            samples.append(event)

    as_of = datetime.fromisoformat("2026-06-15T00:00:00+00:00")
    rp = Replay(engine, as_of, on_change, lambda r: None)
    t1 = time.perf_counter()
    for n, line in enumerate(lines, 1):
        rp.receipt_line(line, n)
    t2 = time.perf_counter()
    loop_events = rp.stats.changes  # published by the receipt loop (before the final transitions)
    rows = rp.finish()
    t3 = time.perf_counter()
    st = rp.stats
    n = len(lines)
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rules": rules,
        "receipts": n,
        "clients": len(rows),
        "generated_in_s": round(gen, 1),
        "apply_s": round(t2 - t1, 2),
        "finish_s": round(t3 - t2, 2),
        "receipts_per_s": round(n / (t2 - t1)),
        "receipts_per_s_incl_finish": round(n / (t3 - t1)),
        "changes": st.changes,
        "changes_in_receipt_loop": loop_events,
        "changes_bytes": out_bytes,
        "rejected": st.rejected_total,
        "duplicates": st.duplicates,
    }
    if not args.no_stages:
        decode_s = stage_decode_validate(lines, as_of)
        apply_s = stage_apply(lines, as_of, "Europe/Moscow")
        floor_s = stage_contract_floor(lines, as_of, samples, loop_events / n)
        loop_us = (t2 - t1) / n * 1e6
        us = {"decode_validate": decode_s / n * 1e6, "apply": apply_s / n * 1e6}
        us["evaluate_time_events_rest"] = loop_us - us["decode_validate"] - us["apply"]
        report["us_per_receipt"] = {"replay_loop": round(loop_us, 1), **{k: round(v, 1) for k, v in us.items()}}
        report["contract_floor"] = {
            "us_per_receipt": round(floor_s / n * 1e6, 1),
            "receipts_per_s": round(n / floor_s),
            "events_per_receipt": round(loop_events / n, 3),
        }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
