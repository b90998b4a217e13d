"""Evaluating every dimension at an instant, and finding when segments change by themselves.

Dimensions are compiled into CEL programs that return a list of segment ids (``let``
values inlined), so evaluating a group of dimensions is one CEL call. Results are cached by
:class:`rules.abstraction.ResultKey` (where each input falls among the constants it is
compared with), so most evaluations cost the metric look-ups and no CEL call. Every
dimension whose inputs are all keyed that way shares one program and cache; a dimension
that reads an input by its exact value (``top_category == ""``, a city) has its own, so
its cache misses do not re-run every other dimension. If a program fails at run time
(e.g. a division by zero in a user's rule), its dimensions are evaluated one condition at
a time and a failing condition counts as "no match".

``candidates`` lists the instants at which a segment can change with no new receipt:

* for every comparison ``days_since_x <op> rhs``: the instant the whole-day counter reaches
  the value that flips it (``anchor + n days``); for ``age``: the birthday; for a countdown
  (``days_until_birthday``): the business midnight it reaches the value, and the one after
  the birthday (:func:`rules.metrics.profile.countdown_instants`);
* for daily windows: the business midnight at which a receipt's day leaves the window;
* for monthly metrics: the month starts until the buckets run out;
* for hysteresis: the instant the minimum stay in the current segment ends.

Between two candidates no metric a rule reads changes, so trying them in time order gives
the exact instant of the next change.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from datetime import date
from typing import Any

import cel

from rules.abstraction import ResultKey
from rules.calendar import DAY_S, BusinessCalendar
from rules.celtext import free_identifiers, tokenize
from rules.metrics import CATALOGUE, MetricView
from rules.metrics.predictive import first_flip
from rules.metrics.profile import countdown_instants
from rules.record.state import MONTHS_KEPT, ClientState
from rules.ruleset import Dimension, Expr, RuleSet

_RESULTS_KEPT = 100_000  # cached evaluation results (see rules.abstraction)
FAR = 32_503_680_000  # 3000-01-01T00:00:00Z: bounds "forever" for calendar arithmetic


@dataclass(frozen=True, slots=True)
class Verdict:
    segment: str
    rule: str  # "<dimension>.<segment>", "<dimension>.default", "<dimension>.value"


class Env:
    """Variables of one rule set at one instant (slow path): metrics and ``let`` values."""

    __slots__ = ("_lets", "errors", "rs", "view")

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
        return cel_value(self.view, name, self.rs.map_keys.get(name))

    def run(self, expr: Expr) -> Any:
        return expr.program.execute({n: self.get(n) for n in expr.names})


def cel_value(view: MetricView, name: str, keys: tuple[str, ...] | None) -> Any:
    value = view.cel(name)
    if keys:
        value = dict(value)
        for k in keys:
            value.setdefault(k, 0.0)
    return value


def _as_segment(result: Any) -> str:
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float) and result.is_integer():
        return str(int(result))
    return str(result)


def raw_verdict(dim: Dimension, env: Env) -> Verdict:
    """One dimension, condition by condition (the slow, error-tolerant path)."""
    if dim.value is not None:
        try:
            return Verdict(_as_segment(env.run(dim.value)), f"{dim.id}.value")
        except Exception:  # any CEL runtime error is "no match"
            env.errors += 1
            return Verdict(dim.default or "error", f"{dim.id}.value")
    for seg in dim.segments:
        if seg.when is None:
            return Verdict(seg.id, f"{dim.id}.{seg.id}")
        try:
            if env.run(seg.when) is True:
                return Verdict(seg.id, f"{dim.id}.{seg.id}")
        except Exception:  # any CEL runtime error is "no match"
            env.errors += 1
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


def effective(dim: Dimension, verdict: Verdict, current: list[Any] | None, t: int) -> Verdict:
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


def _inline(text: str, rs: RuleSet) -> str:
    """Replace ``let`` names by their (parenthesised, recursively inlined) expressions."""
    tokens = tokenize(text)
    lets = {i: tok.text for i, tok in free_identifiers(tokens) if tok.text in rs.lets}
    if not lets:
        return text
    return " ".join(
        f"({_inline(rs.lets[lets[i]].text, rs)})" if i in lets else t.text
        for i, t in enumerate(tokens)
    )


def _dimension_source(dim: Dimension, rs: RuleSet) -> str:
    if dim.value is not None:
        return f"string({_inline(dim.value.text, rs)})"
    out = []
    for seg in dim.segments:
        if seg.when is None:
            out.append(f'"{seg.id}"')
            break
        out.append(f'({_inline(seg.when.text, rs)}) ? "{seg.id}" : ')
    else:
        out.append(f'"{dim.default}"')
    return "".join(out)


class Group:
    """Dimensions evaluated by one CEL program, with one result cache.

    Dimensions whose every input is keyed coarsely (see :mod:`rules.abstraction`) share the
    first group, so one cached result serves them all. A dimension that reads some input by
    its exact value (``top_category == ""``, a city) gets a group of its own: its cache
    misses then run only its own program, not the whole plan.
    """

    __slots__ = ("dims", "map_keys", "names", "positions", "program", "result_key", "results", "rules")

    def __init__(self, dims: list[tuple[int, RuleSet, Dimension]], all_names: tuple[str, ...]) -> None:
        self.dims = dims
        source = "[" + ", ".join(_dimension_source(d, rs) for _, rs, d in dims) + "]"
        self.program = cel.compile(source)
        self.names = tuple(sorted({n for _, _, d in dims for n in d.metrics}))
        self.positions = tuple(all_names.index(n) for n in self.names)
        map_keys: dict[str, set[str]] = {}
        for _, rs, _d in dims:
            for metric, keys in rs.map_keys.items():
                if metric in self.names:
                    map_keys.setdefault(metric, set()).update(keys)
        self.map_keys = {m: tuple(sorted(k)) for m, k in map_keys.items()}
        self.result_key = ResultKey(source, self.names)
        self.results: dict[tuple[Any, ...], list[Verdict]] = {}
        self.rules = [
            {s.id: f"{d.id}.{s.id}" for s in d.segments} if d.value is None else {}
            for _, _, d in dims
        ]

    def evaluate(self, values: list[Any]) -> list[Verdict] | None:
        """Verdicts of the group's dimensions for these inputs (``names`` order); None
        when the program fails at run time."""
        key = self.result_key.key(values)
        cached = self.results.get(key)
        if cached is not None:
            return cached
        ctx = dict(zip(self.names, values, strict=True))
        for name, keys in self.map_keys.items():
            ctx[name] = dict(ctx[name])
            for k in keys:
                ctx[name].setdefault(k, 0.0)
        try:
            result = self.program.execute(ctx)
        except Exception:  # any CEL runtime error: the caller takes the slow path
            return None
        verdicts = []
        for (_, _, d), rules, seg in zip(self.dims, self.rules, result, strict=True):
            if d.value is not None:
                verdicts.append(Verdict(seg, f"{d.id}.value"))
            else:
                verdicts.append(Verdict(seg, rules.get(seg, f"{d.id}.default")))
        if len(self.results) >= _RESULTS_KEPT:
            self.results.clear()
        self.results[key] = verdicts
        return verdicts


def _shareable(rs: RuleSet, dim: Dimension) -> bool:
    """Every input keyed by interval, or a bool: few distinct keys, worth sharing a cache."""
    key = ResultKey(_dimension_source(dim, rs), dim.metrics)
    return all(spec is not None or CATALOGUE[n].type == "bool"
               for n, spec in zip(key.names, key.specs, strict=True))


class Plan:
    """Every dimension of the loaded rule sets, compiled into :class:`Group` programs."""

    def __init__(self, rulesets: list[RuleSet], models: Any = None) -> None:
        self.models = models  # the snapshot's fitted models (rules.predict.snapshot.Models)
        self.dims: list[tuple[RuleSet, Dimension]] = [(rs, d) for rs in rulesets for d in rs.dimensions]
        self.names = tuple(sorted({n for _, d in self.dims for n in d.metrics}))
        self._getters = [(CATALOGUE[n].fn, CATALOGUE[n].money) for n in self.names]
        shareable = [_shareable(rs, d) for rs, d in self.dims]
        shared = [(i, rs, d) for i, (rs, d) in enumerate(self.dims) if shareable[i]]
        own = [[(i, rs, d)] for i, (rs, d) in enumerate(self.dims) if not shareable[i]]
        self.groups = [Group(g, self.names) for g in ([shared] if shared else []) + own]
        # one group reading every input in plan order: its verdicts are the plan's
        self._single = len(self.groups) == 1 and self.groups[0].positions == tuple(range(len(self.names)))
        unique: dict[tuple[Any, ...], tuple[Any, Any, tuple[str, ...], RuleSet]] = {}
        for rs, d in self.dims:
            for th, rhs, rhs_names in d.thresholds:
                key = (th, rhs if isinstance(rhs, (int, float)) else id(rhs), id(rs))
                unique.setdefault(key, (th, rhs, rhs_names, rs))
        self.thresholds = list(unique.values())
        # constant thresholds of whole-day counters: anchor -> sorted day counts that flip
        by_anchor: dict[Any, set[int]] = {}
        self._other_thresholds: list[tuple[Any, Any, tuple[str, ...], RuleSet]] = []
        # birthday countdowns: metric -> steps of constant thresholds; those compared with a
        # static metric, evaluated per client
        self._countdown_steps: dict[str, set[int]] = {}
        self._countdowns: list[tuple[Any, Any, tuple[str, ...], RuleSet]] = []
        self._model_thresholds: list[tuple[Any, Any, tuple[str, ...], RuleSet]] = []  # p_alive...
        for th, rhs, rhs_names, rs in self.thresholds:
            spec = CATALOGUE[th.metric]
            if spec.kind == "days" and isinstance(rhs, (int, float)):
                by_anchor.setdefault(spec.anchor, set()).update(
                    n for n in _threshold_steps(th.op, rhs) if n >= 0)
            elif spec.kind == "countdown" and isinstance(rhs, (int, float)):
                self._countdown_steps.setdefault(th.metric, set()).update(_threshold_steps(th.op, rhs))
            elif spec.kind == "countdown":
                self._countdowns.append((th, rhs, rhs_names, rs))
            elif spec.kind == "model":
                self._model_thresholds.append((th, rhs, rhs_names, rs))
            else:
                self._other_thresholds.append((th, rhs, rhs_names, rs))
        self._day_steps = [(fn, sorted(steps)) for fn, steps in by_anchor.items()]
        self.daily_windows = tuple(sorted({n for _, d in self.dims for n in d.daily_windows}))
        self.monthly_window = min(max((d.monthly_window for _, d in self.dims), default=0), MONTHS_KEPT)
        # per dimension: has a minimum stay (hysteresis) somewhere
        self.holds = [bool(d.min_days or any(s.min_days for s in d.segments)) for _, d in self.dims]
        self.hysteresis = any(self.holds)
        self.errors = 0

    def verdicts(self, state: ClientState, t: int, cal: BusinessCalendar,
                 view: MetricView | None = None) -> list[Verdict]:
        """Raw verdicts (before hysteresis) of every dimension, in ``self.dims`` order
        (``view``: the client's metrics at ``t``, if the caller has them)."""
        if view is None:
            view = MetricView(state, t, cal, self.models)
        scale = view.scale
        values = [fn(view) / scale if money else fn(view) for fn, money in self._getters]
        if self._single:
            verdicts = self.groups[0].evaluate(values)
            if verdicts is not None:
                return verdicts
        out: list[Verdict] = [None] * len(self.dims)  # type: ignore[list-item]
        envs: dict[int, Env] = {}
        for group in self.groups:
            # a single group got here because its program failed: do not run it again
            found = None if self._single else group.evaluate([values[i] for i in group.positions])
            for n, (i, rs, d) in enumerate(group.dims):
                if found is not None:
                    out[i] = found[n]
                else:  # condition by condition, a failing one counts as "no match"
                    env = envs.setdefault(id(rs), Env(rs, view))
                    out[i] = raw_verdict(d, env)
        self.errors += sum(e.errors for e in envs.values())
        return out

    def _rhs(self, rhs: Any, names: tuple[str, ...], rs: RuleSet, envs: dict[int, Env], state: ClientState,
             after: int, cal: BusinessCalendar) -> Any:
        """The other side of a threshold at ``after``: a constant, or its CEL expression's
        value (None when it fails: "no match")."""
        if isinstance(rhs, (int, float)):
            return rhs
        env = envs.get(id(rs)) or envs.setdefault(id(rs), Env(rs, MetricView(state, after, cal, self.models)))
        try:
            return rhs.execute({n: env.get(n) for n in names})
        except Exception:  # any CEL runtime error is "no match"
            return None

    def candidates(self, state: ClientState, after: int, until: int,
                   cal: BusinessCalendar) -> list[int]:
        """Instants in (after, until] at which some rule input can change."""
        out: set[int] = set()
        for anchor_fn, steps in self._day_steps:
            start = anchor_fn(state)
            if start is None:
                continue
            lo = bisect_right(steps, (after - start) // DAY_S)
            for n in steps[lo:]:
                c = start + n * DAY_S
                if c > until:
                    break
                if c > after:
                    out.add(c)
        envs: dict[int, Env] = {}
        for th, rhs, names, rs in self._other_thresholds:
            metric = CATALOGUE[th.metric]
            anchor: int | None = None
            born: str | None = None
            if metric.kind == "days":
                assert metric.anchor is not None
                anchor = metric.anchor(state)
                if anchor is None:
                    continue
            else:
                born = state.profile.get("birth_date")
                if born is None:
                    continue
            if isinstance(rhs, (int, float)):
                value = rhs
            else:
                env = envs.get(id(rs))
                if env is None:
                    env = envs[id(rs)] = Env(rs, MetricView(state, after, cal, self.models))
                try:
                    value = rhs.execute({n: env.get(n) for n in names})
                except Exception:  # any CEL runtime error is "no match"
                    continue
            for n in _threshold_steps(th.op, value):
                if anchor is not None:
                    c = anchor + n * DAY_S
                elif born is not None and 0 <= n <= 150:
                    c = cal.anniversary(date.fromisoformat(born), n)
                else:
                    continue
                if after < c <= until and n >= 0:
                    out.add(c)
        if self.daily_windows and (state.sales or state.rets):
            lo_day, hi_day = cal.day(after), cal.day(min(until, FAR))
            for n in self.daily_windows:
                # business day d leaves an n-day window when day d + n begins
                lo, hi = lo_day - n, hi_day - n
                for rows in (state.sales, state.rets):
                    for row in rows:
                        d = row[1]
                        if lo <= d <= hi:
                            c = cal.day_start(d + n)
                            if after < c <= until:
                                out.add(c)
        if self.daily_windows and state.comm is not None and state.comm.rows:
            lo_day, hi_day = cal.day(after), cal.day(min(until, FAR))
            for n in self.daily_windows:  # a communication leaves a window like a receipt
                for row in state.comm.rows:
                    d = cal.day(row[1])
                    if lo_day - n <= d <= hi_day - n:
                        c = cal.day_start(d + n)
                        if after < c <= until:
                            out.add(c)
        if self.monthly_window and state.months:
            first = cal.month(after) + 1
            last = min(max(state.months) + self.monthly_window + 1, cal.month(min(until, FAR)))
            for m in range(first, last + 1):
                out.add(cal.month_start(m))
        if self.hysteresis:
            for _, dim in self.dims:
                hold = hold_until(dim, state.segments.get(dim.id))
                if after < hold <= until:
                    out.add(hold)
        for th, rhs, names, rs in self._model_thresholds:  # p_alive...: where the comparison flips
            value = self._rhs(rhs, names, rs, envs, state, after, cal)
            flip = None if value is None else first_flip(state, th.metric, th.op, value, after,
                                                         min(until, FAR), cal, self.models)
            if flip is not None:
                out.add(flip)
        if self._countdown_steps or self._countdowns:  # up to a horizon past every other candidate
            yearly = self._countdown_steps
            if self._countdowns:
                yearly = {m: set(steps) for m, steps in yearly.items()}
                for th, rhs, names, rs in self._countdowns:
                    value = self._rhs(rhs, names, rs, envs, state, after, cal)
                    if value is not None:
                        yearly.setdefault(th.metric, set()).update(_threshold_steps(th.op, value))
            out |= countdown_instants(state, yearly, after, min(until, FAR), cal, max(out, default=after))
        return sorted(out)
