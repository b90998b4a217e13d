"""``loyalty call-plan``: the scenario actions an administrator makes by phone, as a CSV.

Netix (seed 004): "разделить всех клиентов на группы ... и с каждой группой провести
какие-либо действия: отправить СМС, составить план обзвона". Scenarios whose action channel
is ``call`` (``remind_lapsing_netix`` with ``channel: call``, a calendar scenario for VIP
clients...) publish actions like any other; this command turns them into a list to call:
one row per action still open (not yet answered by a response or a purchase), with the
reason (the scenario and what triggered it), the offer and the client's key figures.

Inputs: the scenario events (``loyalty replay --scenarios ... --actions-out``, or the
``loyalty.scenario-actions`` topic saved with ``loyalty tail``), optionally the segments
file of the same replay (the figures as of ``--as-of``; otherwise the figures the action's
expressions read) and the profiles (first name and phone, which the action events do not
carry). Rows are ordered by ``respond_by``, then by lifetime value, highest first.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterable
from typing import IO, Any

import orjson

from rules.scenario.events import ACTION_TYPE, CONVERSION_TYPE, RESPONDED_TYPE

COLUMNS = ("client_id", "first_name", "phone", "scenario", "campaign", "reason", "offer", "reward", "unit",
           "send_at", "respond_by", "lifetime_value", "lifetime_visits", "avg_check",
           "days_since_last_purchase", "segments", "action_id")
FIGURES = ("lifetime_value", "lifetime_visits", "avg_check", "days_since_last_purchase")


def _jsonl(lines: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if line:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                yield doc


def reason(data: dict[str, Any]) -> str:
    """Why the client is on the list, e.g. ``netix: regular -> losing`` or ``calendar 03-08``."""
    trig = data.get("trigger") or {}
    if "calendar" in trig:
        seg = f" ({trig.get('dimension')} {trig.get('segment')})" if trig.get("dimension") else ""
        return f"calendar {trig['calendar']}{seg}"
    return f"{trig.get('dimension')}: {trig.get('from') or 'new'} -> {trig.get('to')}"


def plan(events: Iterable[dict[str, Any]], segments: Iterable[dict[str, Any]] = (),
         profiles: Iterable[dict[str, Any]] = (), channel: str = "call",
         open_only: bool = True) -> list[dict[str, Any]]:
    """The rows of the call plan (see the module docstring)."""
    actions: dict[str, dict[str, Any]] = {}
    answered: set[str] = set()
    for e in events:
        kind = e.get("type")
        if kind == ACTION_TYPE and (channel == "*" or e["data"].get("channel") == channel):
            actions[e["id"]] = e
        elif kind in (CONVERSION_TYPE, RESPONDED_TYPE):
            answered.add(e["data"]["action_id"])
    rows_of = {r["client_id"]: r for r in segments if "client_id" in r}
    people = {p["client_id"]: p for p in profiles if "client_id" in p}
    out = []
    for aid, action in actions.items():
        if open_only and aid in answered:
            continue
        d = action["data"]
        cid = d["client_id"]
        row = rows_of.get(cid, {})
        figures = {**(d.get("inputs") or {}), **(row.get("metrics") or {})}
        person = people.get(cid, {})
        out.append({
            "client_id": cid, "first_name": person.get("first_name", ""), "phone": person.get("phone", ""),
            "scenario": d["scenario"], "campaign": d.get("campaign") or "", "reason": reason(d),
            "offer": d["offer"], "reward": d.get("reward") or "", "unit": d.get("unit", ""),
            "send_at": d["send_at"], "respond_by": d["respond_by"],
            **{f: figures.get(f, "") for f in FIGURES},
            "segments": " ".join(f"{k}={v}" for k, v in sorted((row.get("segments") or {}).items())),
            "action_id": aid,
        })

    def value(r: dict[str, Any]) -> float:
        try:
            return float(r["lifetime_value"])
        except (TypeError, ValueError):
            return 0.0

    out.sort(key=lambda r: (r["respond_by"], -value(r), r["client_id"]))
    return out


def write_csv(rows: list[dict[str, Any]], out: IO[bytes]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.write(text.getvalue().encode())


def cmd_call_plan(args: argparse.Namespace) -> int:
    def read(path: str | None) -> list[dict[str, Any]]:
        if not path:
            return []
        with open(path, "rb") as fh:
            return list(_jsonl(fh))

    rows = plan(read(args.actions), read(args.segments), read(args.profiles), args.channel, not args.all)
    if args.out in (None, "-"):
        write_csv(rows, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with open(args.out, "wb") as fh:
            write_csv(rows, fh)
    print(orjson.dumps({"rows": len(rows), "channel": args.channel}).decode(), file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    c = sub.add_parser("call-plan", help="scenario actions to make by phone, as a CSV for an administrator")
    c.add_argument("--actions", required=True, help="scenario events, JSON Lines (replay --actions-out, "
                   "or the actions topic saved with loyalty tail)")
    c.add_argument("--segments", help="segments and metrics per client (replay --segments-out)")
    c.add_argument("--profiles", help="client profiles, JSON Lines (first name, phone)")
    c.add_argument("--channel", default="call", help="action channel to list ('*': every channel)")
    c.add_argument("--all", action="store_true", help="also actions already answered or converted")
    c.add_argument("--out", default="-", help="CSV file ('-': stdout)")
    c.set_defaults(fn=cmd_call_plan)
