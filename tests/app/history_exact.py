"""Exact answers to the membership-history questions, written independently of the code
under test: plain Python over the change events themselves (CloudEvents as ``loyalty
replay`` writes them), with the standard library's time zones for months. The definitions
are those of docs/how-to/ask-who-was-where.md."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

Chain = list[tuple[int, str, str]]  # (instant, from ("" none), to), in event order


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def rfc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def chains(events: list[dict[str, Any]], dim: str) -> dict[str, Chain]:
    out: dict[str, Chain] = defaultdict(list)
    for e in events:
        d = e["data"]
        if d["dimension"] == dim:
            out[d["client_id"]].append((epoch(e["time"]), d["from"] or "", d["to"]))
    return dict(out)


def now_segments(events: list[dict[str, Any]], dim: str) -> dict[str, tuple[str, int]]:
    """Each client's segment in ``dim`` after its last change, and since when."""
    return {cid: (c[-1][2], c[-1][0]) for cid, c in chains(events, dim).items()}


def was(events: list[dict[str, Any]], dim: str, x: set[str], start: int, end: int,
        now_dim: str, now: set[str]) -> dict[str, dict[str, Any]]:
    """client -> its intervals in x sharing a positive time with [start, end), and its segment
    now in now_dim (when in ``now``, or any when ``now`` is empty)."""
    current = now_segments(events, now_dim)
    out: dict[str, dict[str, Any]] = {}
    for cid, chain in chains(events, dim).items():
        hits = []
        for n, (since, _, held) in enumerate(chain):
            left = chain[n + 1][0] if n + 1 < len(chain) else None
            if held in x and max(since, start) < min(math.inf if left is None else left, end):
                hits.append({"segment": held, "entered": rfc(since), "left": None if left is None else rfc(left)})
        seg, at = current.get(cid, (None, 0))
        if hits and (not now or seg in now):
            out[cid] = {"client_id": cid, "intervals": hits,
                        "now": {"dimension": now_dim, "segment": seg, "since": rfc(at) if seg else None}}
    return out


def entered(events: list[dict[str, Any]], dim: str, x: set[str], start: int, end: int) -> dict[str, list[str]]:
    """client -> the instants of its changes from outside x into x within [start, end)."""
    out: dict[str, list[str]] = {}
    for cid, chain in chains(events, dim).items():
        times = [rfc(t) for t, frm, to in chain if to in x and frm not in x and start <= t < end]
        if times:
            out[cid] = times
    return out


def stays(events: list[dict[str, Any]], dim: str, x: set[str], now: int, start: int | None = None,
          end: int | None = None) -> dict[str, Any]:
    done: list[int] = []
    going: list[int] = []
    clients = set()
    for cid, chain in chains(events, dim).items():
        began = None
        for t, frm, to in chain:
            if to in x and frm not in x:
                began = t
            elif frm in x and to not in x and began is not None:
                if (start is None or began >= start) and (end is None or began < end):
                    done.append(t - began)
                    clients.add(cid)
                began = None
        if began is not None and (start is None or began >= start) and (end is None or began < end):
            going.append(now - began)
            clients.add(cid)
    return {"clients": len(clients), "completed": summary(done), "ongoing": summary(going)}


def summary(xs: list[int]) -> dict[str, Any]:
    if not xs:
        return {"count": 0, "mean_days": None, "median_days": None, "p90_days": None}
    ranked = sorted(xs)
    p90 = next(v for i, v in enumerate(ranked, 1) if i >= 0.9 * len(xs))
    return {"count": len(xs), "mean_days": round(statistics.mean(xs) / 86_400, 2),
            "median_days": round(statistics.median(xs) / 86_400, 2), "p90_days": round(p90 / 86_400, 2)}


def cohorts(events: list[dict[str, Any]], dim: str, active: set[str], months: list[tuple[int, int]],
            horizon: int, now: int, tz: str) -> list[dict[str, Any]]:
    """Per cohort month (year, month): clients whose first change in dim is in it, and per
    n = 0..horizon the ones holding an active segment just before month M+n+1 begins."""
    zone = ZoneInfo(tz)
    firsts = {cid: c[0][0] for cid, c in chains(events, dim).items()}
    every = chains(events, dim)
    rows = []
    for y, m in months:
        group = [cid for cid, t in firsts.items()
                 if (datetime.fromtimestamp(t, zone).year, datetime.fromtimestamp(t, zone).month) == (y, m)]
        cells: list[dict[str, Any] | None] = []
        for n in range(horizon + 1):
            k = y * 12 + (m - 1) + n + 1
            boundary = int(datetime(k // 12, k % 12 + 1, 1, tzinfo=zone).timestamp())
            if boundary > now:
                cells.append(None)
                continue
            count = 0
            for cid in group:
                held = None
                for t, _, to in every[cid]:
                    if t < boundary:
                        held = to
                count += held in active
            cells.append({"active": count, "unknown": 0, "rate": round(count / len(group), 4) if group else None})
        rows.append({"cohort": f"{y:04d}-{m:02d}", "clients": len(group), "months": cells})
    return rows
