"""The cost of a communication event next to a receipt's, in one run of the core.

Simulated receipts (boostfeel + rfm + manzana + netix_contact), then communication events
for the same clients over the same period (a message every ~10 days per client on average,
half of the clients answering some), applied in event-time order as ``loyalty replay``
does. Prints µs per receipt and per communication event for the replay loop (decode,
validate, apply, evaluate, time-based changes, events), the record's bytes with and
without communications, and the change events each caused.

Usage:
    python bench/bench_communications.py [--clients 5000] [--days 90] [--rules ...]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from datetime import datetime, timedelta

import orjson

from app.batch.replay import Replay
from app.batch.simulate import DEFAULT_END, SimConfig, generate
from rules import Engine, load_ruleset, loads, parse_receipt
from rules.inputs.communications import parse_communication
from rules.record.state import dumps


def communications(clients: list[str], start: datetime, days: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    out = []
    for cid in clients:
        answers = rnd.choice((0.0, 0.1, 0.5, 0.9))
        for m in range(rnd.randint(1, max(2, days // 5))):
            t = start + timedelta(seconds=rnd.randint(0, days * 86_400 - 1))
            channel = rnd.choice(("email", "sms", "push"))
            base = {"client_id": cid, "channel": channel, "campaign": f"c{m % 4}"}
            out.append(orjson.dumps({**base, "event_id": f"{cid}-{m}", "event": "sent",
                                     "occurred_at": t.isoformat()}))
            if rnd.random() < answers:
                out.append(orjson.dumps({**base, "event_id": f"{cid}-{m}-r", "event": "opened",
                                         "occurred_at": (t + timedelta(hours=3)).isoformat()}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--rules", action="append", default=None)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    rules = args.rules or ["boostfeel", "rfm", "manzana", "netix_contact"]
    receipts = list(generate(SimConfig(clients=args.clients, days=args.days, seed=args.seed)))
    ids = sorted({r.client_id for line in receipts
                  if (r := _receipt(line)) is not None and r.client_id is not None})
    start = DEFAULT_END - timedelta(days=args.days)
    comms = communications(ids, start, args.days, args.seed)
    as_of = DEFAULT_END
    keyed = []
    for line in receipts:
        r = _receipt(line)
        if r is not None:
            keyed.append((r.at, 0, line))
    for line in comms:
        keyed.append((parse_communication(loads(line), None).at, 1, line))
    keyed.sort()
    engine = Engine([load_ruleset(r) for r in rules], tz="Europe/Moscow")
    events = [0, 0]
    spent = [0.0, 0.0]
    counts = [0, 0]
    kind_now = [0]

    def on_change(event: dict[str, object]) -> None:
        events[kind_now[0]] += 1

    replay = Replay(engine, as_of, on_change, lambda row: None)
    for _, kind, line in keyed:
        kind_now[0] = kind
        t0 = time.perf_counter()
        if kind:
            replay.communication_line(line, 0)
        else:
            replay.receipt_line(line, 0)
        spent[kind] += time.perf_counter() - t0
        counts[kind] += 1
    sizes = [len(dumps(s)) for s in replay.states.values()]
    no_comm = []
    for s in replay.states.values():
        comm, s.comm = s.comm, None
        no_comm.append(len(dumps(s)))
        s.comm = comm
    report = {
        "python": platform.python_version(),
        "rules": rules,
        "clients": len(replay.states),
        "receipts": counts[0],
        "communications": counts[1],
        "us_per_receipt": round(spent[0] / counts[0] * 1e6, 1),
        "us_per_communication": round(spent[1] / counts[1] * 1e6, 1),
        "changes_per_receipt": round(events[0] / counts[0], 3),
        "changes_per_communication": round(events[1] / counts[1], 3),
        "record_bytes_mean": round(sum(sizes) / len(sizes)),
        "record_bytes_mean_without_communications": round(sum(no_comm) / len(no_comm)),
        "communication_bytes_mean": round((sum(sizes) - sum(no_comm)) / len(sizes), 1),
        "communication_bytes_max": max(a - b for a, b in zip(sizes, no_comm, strict=True)),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


def _receipt(line: bytes):  # type: ignore[no-untyped-def]
    try:
        return parse_receipt(loads(line), None)
    except Exception:
        return None


if __name__ == "__main__":
    main()
