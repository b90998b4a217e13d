"""Segment sizes over event time, from the projection's per-day transition counters.

Every projected change is counted once under the business day of its event time
(``tr:<dimension>:<day>``, :mod:`app.projection.store`). A segment's size at the end of a
day is therefore the number of changes into it minus the number out of it up to that day:
a cumulative sum. So a backfill of five years of history shows five years of month-over-month
dynamics ("180 sleeping clients last month, 210 this month"), not one point at the day it
was loaded, and the sizes at the last day equal the current ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

__all__ = ["label", "sizes_over_time"]


def label(day: str, period: str) -> str:
    """The period a business day (YYYY-MM-DD) falls in: the day, ``YYYY-Www`` or ``YYYY-MM``."""
    if period == "day":
        return day
    if period == "month":
        return day[:7]
    if period == "week":
        y, w, _ = date.fromisoformat(day).isocalendar()
        return f"{y}-W{w:02d}"
    return "total"


def sizes_over_time(rows: Iterable[tuple[str, dict[str, int]]], start: date, end: date,
                    period: str) -> list[dict[str, Any]]:
    """One point per period meeting [start, end]: the sizes at the end of its last day in
    the range, and the entries and exits during its days in the range.

    ``rows``: (day, {"from>to": changes}) for every day with changes up to ``end``, in
    ascending order ("" as ``from``: a client's first segment)."""
    sizes: dict[str, int] = {}
    by_day = dict(rows)
    points: list[dict[str, Any]] = []
    for before in sorted(d for d in by_day if d < start.isoformat()):
        _apply(sizes, by_day[before], None, None)
    current: dict[str, Any] | None = None
    day = start
    while day <= end:
        text = day.isoformat()
        name = label(text, period)
        if current is None or current["period"] != name:
            current = {"period": name, "date": text, "sizes": {}, "entries": {}, "exits": {}}
            points.append(current)
        if text in by_day:
            _apply(sizes, by_day[text], current["entries"], current["exits"])
        current["date"] = text
        current["sizes"] = {s: n for s, n in sorted(sizes.items()) if n > 0}
        day += timedelta(days=1)
    for point in points:
        point["entries"] = dict(sorted(point["entries"].items()))
        point["exits"] = dict(sorted(point["exits"].items()))
    return points


def _apply(sizes: dict[str, int], pairs: dict[str, int], entries: dict[str, int] | None,
           exits: dict[str, int] | None) -> None:
    for pair, n in pairs.items():
        frm, _, to = pair.rpartition(">")
        sizes[to] = sizes.get(to, 0) + n
        if entries is not None:
            entries[to] = entries.get(to, 0) + n
        if frm:
            sizes[frm] = sizes.get(frm, 0) - n
            if exits is not None:
                exits[frm] = exits.get(frm, 0) + n
