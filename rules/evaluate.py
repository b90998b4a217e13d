"""Evaluating dimensions at an instant, and finding the next instant a segment changes.

``next_change`` is exact: a segment can only change with no new receipt when a
time-dependent metric steps, so the candidates are

* for every comparison ``days_since_x <op> rhs``: the instant the whole-day counter reaches
  the value that flips it (``anchor + n days``); for ``age``: the birthday;
* for daily windows: the business midnight at which a receipt's day leaves the window;
* for monthly metrics: the month starts until the buckets run out;
* for hysteresis: the instant the minimum stay in the current segment ends.

They are tried in time order; the first at which the dimension's effective segment
differs is the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from rules.calendar import DAY_S, BusinessCalendar
from rules.metrics import CATALOGUE, MetricView
from rules.ruleset import Dimension, Expr, RuleSet
from rules.state import MONTHS_KEPT, ClientState


@dataclass(frozen=True, slots=True)
class Verdict:
    segment: str
    rule: str  # "<dimension>.<segment>" of the matching segment, or "<dimension>.default"


class Env:
    """Variables for one rule set at one instant: metrics (lazy) and ``let`` values."""

    __slots__ = ("errors", "rs", "view", "_lets")

    def __init__(self, rs: RuleSet, view: MetricView) -> None:
        self.rs = rs
        self.view = view
        self._lets: dict[str, Any] = {}
        self.errors = 0

    def get(self, name: str) -> Any:
        if name in self.rs.lets:
            if name not in self._lets:
                self._lets[name] = self.run(self.rs.lets[name])
            return self._lets[name]
        value = self.view.cel(name)
        keys = self.rs.map_keys.get(name)
        if keys:
            value = dict(value)
            for k in keys:
                value.setdefault(k, 0.0)
        return value

    def run(self, expr: Expr) -> Any:
        return expr.program.execute({n: self.get(n) for n in expr.names})


def raw_verdict(dim: Dimension, env: Env) -> Verdict:
    if dim.value is not None:
        try:
            result = env.run(dim.value)
        except (TypeError, RuntimeError, ValueError):
            env.errors += 1
            return Verdict(dim.default or "error", f"{dim.id}.value")
        if isinstance(result, float) and result.is_integer():
            result = int(result)
        return Verdict(str(result).lower() if isinstance(result, bool) else str(result), f"{dim.id}.value")
    for seg in dim.segments:
        if seg.when is None:
            return Verdict(seg.id, f"{dim.id}.{seg.id}")
        try:
            if env.run(seg.when) is True:
                return Verdict(seg.id, f"{dim.id}.{seg.id}")
        except (TypeError, RuntimeError, ValueError):
            env.errors += 1  # a runtime error (e.g. division by zero) is "no match"
    assert dim.default is not None
    return Verdict(dim.default, f"{dim.id}.default")


def hold_until(dim: Dimension, current: list[Any] | None) -> int:
    """Instant before which the current segment is kept (hysteresis); 0 if none."""
    if not current:
        return 0
    seg_id, since = current[0], current[1]
    days = dim.min_days
    for seg in dim.segments:
        if seg.id == seg_id:
            days = seg.min_days
            break
    return since + days * DAY_S if days else 0


def effective(dim: Dimension, env: Env, current: list[Any] | None, t: int) -> Verdict:
    verdict = raw_verdict(dim, env)
    if current and verdict.segment != current[0] and t < hold_until(dim, current):
        return Verdict(current[0], f"{dim.id}.hold")
    return verdict


def _threshold_steps(op: str, value: float) -> list[int]:
    if op in (">=", "<"):
        return [math.ceil(value)]
    if op in (">", "<="):
        return [math.floor(value) + 1]
    if float(value).is_integer():  # == and !=
        return [int(value), int(value) + 1]
    return []


def candidates(dim: Dimension, rs: RuleSet, state: ClientState, after: int, until: int,
               cal: BusinessCalendar) -> list[int]:
    """Instants in (after, until] at which the dimension's inputs can change."""
    out: set[int] = set()
    if dim.thresholds:
        env = Env(rs, MetricView(state, after, cal))
        for th, rhs, names in dim.thresholds:
            try:
                value = rhs.execute({n: env.get(n) for n in names})
            except (TypeError, RuntimeError, ValueError):
                continue
            metric = CATALOGUE[th.metric]
            if metric.kind == "days":
                assert metric.anchor is not None
                anchor = metric.anchor(state)
                if anchor is not None:
                    out.update(anchor + n * DAY_S for n in _threshold_steps(th.op, value) if n >= 0)
            else:  # years: birthdays
                born = state.profile.get("birth_date")
                if born is not None:
                    b = date.fromisoformat(born)
                    out.update(cal.anniversary(b, n) for n in _threshold_steps(th.op, value)
                               if 0 <= n <= 150)
    if dim.daily_windows:
        days = {s[1] for s in state.sales} | {r[1] for r in state.rets}
        for n in dim.daily_windows:
            out.update(cal.day_start(d + n) for d in days)
    if dim.monthly_window and state.months:
        first = cal.month_of_day(cal.day(after)) + 1
        last = max(state.months) + min(dim.monthly_window, MONTHS_KEPT) + 1
        out.update(cal.month_start(m) for m in range(first, last + 1))
    hold = hold_until(dim, state.segments.get(dim.id))
    if hold:
        out.add(hold)
    return sorted(c for c in out if after < c <= until)


def next_change(dim: Dimension, rs: RuleSet, state: ClientState, after: int, until: int,
                cal: BusinessCalendar) -> tuple[int, Verdict] | None:
    """The first instant in (after, until] where the dimension's segment changes."""
    current = state.segments.get(dim.id)
    if current is None:
        return None
    for c in candidates(dim, rs, state, after, until, cal):
        verdict = effective(dim, Env(rs, MetricView(state, c, cal)), current, c)
        if verdict.segment != current[0]:
            return c, verdict
    return None
