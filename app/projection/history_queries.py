"""Questions over membership histories (:class:`app.projection.history.History`), as pure
functions: no I/O, no clock (``now`` and the calendar are arguments). The Redis readers that
feed them are :mod:`app.projection.history_reads`.

Definitions (instants are epoch seconds; an interval is ``[entered, left)``):

* **segments**: every question takes a set of segments of one dimension ``X``; a *stay* in
  ``X`` is a maximal run of consecutive intervals whose segments are all in ``X`` (with one
  segment: one interval). Moving between two segments of ``X`` is not an entry.
* **was in X during [start, end)**: an interval in ``X`` shares a positive time with the
  window (a change into and out of ``X`` in the same second is no stay).
* **entered X in [start, end)**: a stay in ``X`` began at an instant in the window (with its
  instant); a client can enter several times.
* **stays**: the length of each stay in ``X`` (optionally only those begun in a window):
  completed (left) and ongoing (as of ``now``).
* **cohorts**: clients by the business month of their first change in the dimension (their
  first segmentation, made at their first purchase for purchase-driven rule sets); for
  ``n = 0..horizon``, how many held a segment of the active set at the end of month ``M + n``
  (the segment held just before the next month's first midnight, business time zone).

Retention (:mod:`app.projection.history`): a history whose older intervals were dropped
starts with a segment entered at an unknown instant; a stay begun before the kept history is
left out of ``entered`` and ``stays``, and a cohort cell whose instant falls before the kept
history counts the client as ``unknown``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from app.projection.history import History, Interval
from rules.calendar import BusinessCalendar, to_epoch

UNKNOWN = "?"  # segment_at: the instant lies in history dropped by retention


@dataclass(frozen=True, slots=True)
class Stay:
    """A maximal run of intervals in a set of segments."""

    entered: int
    left: int | None  # None: ongoing
    known_start: bool  # False: it began before the kept history (retention)


def stays_in(h: History, segments: frozenset[str]) -> list[Stay]:
    """The stays of one history in ``segments``, oldest first."""
    out: list[Stay] = []
    start: int | None = None
    known = True
    for n, (seg, t) in enumerate(zip(h.segments, h.starts, strict=True)):
        if seg in segments:
            if start is None:
                start = t
                known = not (n == 0 and h.before in segments)
        elif start is not None:
            out.append(Stay(start, t, known))
            start = None
    if start is not None:
        out.append(Stay(start, None, known))
    return out


def was_in(h: History, segments: frozenset[str], start: int, end: int) -> list[Interval]:
    """The intervals in ``segments`` that share a positive time with ``[start, end)``."""
    if segments.isdisjoint(h.segments):
        return []
    return [iv for iv in h.intervals
            if iv.segment in segments and max(iv.entered, start) < min(_end(iv.left), end)]


def entries(h: History, segments: frozenset[str], start: int, end: int) -> list[int]:
    """The instants in ``[start, end)`` at which a stay in ``segments`` began."""
    return [s.entered for s in stays_in(h, segments) if s.known_start and start <= s.entered < end]


def stay_lengths(h: History, segments: frozenset[str], now: int, start: int | None = None,
                 end: int | None = None) -> tuple[list[int], list[int]]:
    """Seconds of each stay in ``segments`` (begun in ``[start, end)`` when given):
    (completed ones, ongoing ones as of ``now``)."""
    done: list[int] = []
    going: list[int] = []
    for s in stays_in(h, segments):
        if not s.known_start or (start is not None and s.entered < start) or (end is not None and s.entered >= end):
            continue
        if s.left is None:
            going.append(max(0, now - s.entered))
        else:
            done.append(s.left - s.entered)
    return done, going


def summary(seconds: Sequence[int]) -> dict[str, Any]:
    """count, mean, median and 90th percentile (nearest rank) in days, 2 decimals."""
    n = len(seconds)
    if not n:
        return {"count": 0, "mean_days": None, "median_days": None, "p90_days": None}
    xs = sorted(seconds)
    mid = n // 2
    median = xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2
    return {"count": n, "mean_days": _days(sum(xs) / n), "median_days": _days(median),
            "p90_days": _days(xs[math.ceil(0.9 * n) - 1])}


def segment_at_end(h: History, instant: int) -> str | None:
    """The segment held just before ``instant`` (None: not segmented yet; UNKNOWN: dropped
    by retention)."""
    if h.first is not None and instant <= h.first:
        return None
    n = bisect_left(h.starts, instant)  # the latest interval begun before: it lasts until instant
    if n:
        return h.segments[n - 1]
    return UNKNOWN if h.before else None


def cohorts(histories: Iterable[History], active: frozenset[str], first_month: int, last_month: int,
            horizon: int, now: int, cal: BusinessCalendar) -> list[dict[str, Any]]:
    """Cohort table (months are ``year * 12 + month - 1``, as :class:`BusinessCalendar`):
    per month of first segmentation in ``[first_month, last_month]``, its clients and, for
    ``n = 0..horizon``, the active ones at the end of month ``M + n`` (None when that end is
    after ``now``)."""
    by_month: dict[int, list[History]] = {m: [] for m in range(first_month, last_month + 1)}
    for h in histories:
        m = None if h.first is None else cal.month(h.first)  # None: not seen segmented
        if m is not None and m in by_month:
            by_month[m].append(h)
    rows = []
    for m, group in by_month.items():
        cells: list[dict[str, Any] | None] = []
        for n in range(horizon + 1):
            instant = cal.month_start(m + n + 1)
            if instant > now:
                cells.append(None)
                continue
            held = [segment_at_end(h, instant) for h in group]
            k = sum(1 for s in held if s in active)
            cells.append({"active": k, "unknown": sum(1 for s in held if s == UNKNOWN),
                          "rate": round(k / len(group), 4) if group else None})
        rows.append({"cohort": month_label(m), "clients": len(group), "months": cells})
    return rows


def instant(raw: str, cal: BusinessCalendar) -> int:
    """``YYYY-MM-DD`` (the business day's first instant) or an RFC 3339 instant with an
    offset, as epoch seconds (ValueError otherwise)."""
    if len(raw) == 10:
        return cal.day_start(cal.day_of_date(date.fromisoformat(raw)))
    t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{raw!r} has no UTC offset")
    return to_epoch(t)


def merge_cohorts(tables: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Cohort tables of disjoint sets of clients (same months) added together."""
    if not tables:
        return []
    out = []
    for rows in zip(*tables, strict=True):
        clients = sum(r["clients"] for r in rows)
        cells: list[dict[str, Any] | None] = []
        for parts in zip(*(r["months"] for r in rows), strict=True):
            if parts[0] is None:
                cells.append(None)
                continue
            k = sum(c["active"] for c in parts)
            cells.append({"active": k, "unknown": sum(c["unknown"] for c in parts),
                          "rate": round(k / clients, 4) if clients else None})
        out.append({"cohort": rows[0]["cohort"], "clients": clients, "months": cells})
    return out


def month_label(m: int) -> str:
    return f"{m // 12:04d}-{m % 12 + 1:02d}"


def month_number(label: str) -> int:
    """``YYYY-MM`` -> ``year * 12 + month - 1`` (ValueError when malformed)."""
    if len(label) != 7 or label[4] != "-":
        raise ValueError(label)
    y, m = int(label[:4]), int(label[5:])
    if not 1 <= m <= 12 or y < 1970:
        raise ValueError(label)
    return y * 12 + m - 1


def _end(left: int | None) -> float:
    return math.inf if left is None else left


def _days(seconds: float) -> float:
    return round(seconds / 86_400, 2)
