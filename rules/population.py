"""Population statistics: what rules read as ``population.<name>``, computed from every
client's metrics at a snapshot instant, as mergeable aggregates.

A rule set declares the statistics it reads (``population:`` in the YAML); a few are built
in (:data:`BUILTINS`). A snapshot at instant ``s`` is computed as in quix-streams'
aggregations: :func:`initialize` an aggregate, :func:`update` it with each client (its
metrics at ``s``), :func:`merge` per-partition aggregates (in any order: every field is a
sum, a min or a max of integers), :func:`result` the values. Kinds:

* ``count``: clients matching ``where``.
* ``mean``: the mean of a metric over them; ``ratio``: sum of one metric / sum of another
  (``avg_check_12m`` = the business's revenue / visits over 12 months). Exact integer sums.
* ``percentile`` (``at`` = p): nearest rank, the smallest value v such that at least p% of
  the population has a value <= v. Integer metrics (days, visits) are counted exactly, one
  bucket per value. Money is bucketed by DDSketch's logarithmic mapping (relative accuracy
  :data:`RELATIVE_ACCURACY`); each bucket keeps its exact count, sum, min and max, and the
  percentile is the **largest value of the bucket that holds the nearest-rank element**: at
  least the exact percentile and at most ``(1 + a) / (1 - a)`` times it (a 1% band). Only
  clients whose value lies in that band can be scored differently from an exact computation.
* ``pareto`` (``share`` = p, for ABC): over clients with a positive value, ordered by value
  descending, the smallest value v such that the clients above v hold less than p% of the
  total. Clients with a value >= v are the "top p%". Exact for integer metrics; for money the
  buckets' exact sums bound the error to the one bucket where the share is crossed.

Values reach rules as CEL numbers: ints for integer metrics and counts, doubles in major
units for money (like the money metrics).
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

import cel
import orjson
from ddsketch.mapping import LogarithmicMapping

from rules.celtext import free_identifiers, tokenize
from rules.errors import LoyaltyError
from rules.metrics import CATALOGUE, MetricView
from rules.metrics.predictive import inputs_of
from rules.predict import snapshot as predict

RELATIVE_ACCURACY = 0.005
_SIMPLE = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
        ">": operator.gt, "<": operator.lt}
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
KINDS = ("count", "mean", "ratio", "percentile", "pareto")
MODEL = "model"  # the predictive models: implied by reading a predictive metric, never declared
NUMERIC = ("int", "double")


@dataclass(frozen=True, slots=True)
class Stat:
    """One statistic a rule set reads as ``population.<name>``."""

    name: str
    kind: str
    metric: str = ""  # the metric (count: none)
    per: str = ""  # ratio: the denominator metric
    at: float = 0.0  # percentile: p; pareto: share, in percent
    where: str = "has_purchase"  # CEL over metrics: who is in the population
    doc: str = ""

    @property
    def money(self) -> bool:
        """The value is an amount (rules see major units)."""
        if self.kind in ("count", MODEL):
            return False
        if self.kind == "ratio":
            return CATALOGUE[self.metric].money and not CATALOGUE[self.per].money
        return CATALOGUE[self.metric].money

    @property
    def cel_type(self) -> str:
        if self.kind == "count":
            return "int"
        if self.kind == MODEL:
            return "map"
        if self.kind in ("mean", "ratio") or self.money:
            return "double"
        return CATALOGUE[self.metric].type


BUILTINS: dict[str, Stat] = {
    "clients": Stat("clients", "count", doc="clients with at least one purchase"),
    "active_12m": Stat("active_12m", "count", where="visits_12m >= 1",
                       doc="clients with a visit in the current and 11 previous calendar months"),
    "avg_check_12m": Stat("avg_check_12m", "ratio", "revenue_12m", "visits_12m",
                          doc="the business's average check: revenue_12m / visits_12m summed over all clients"),
    "avg_check": Stat("avg_check", "ratio", "lifetime_revenue", "lifetime_visits",
                      doc="lifetime revenue / lifetime visits summed over all clients"),
}


#: what a rule set reading a predictive metric (``p_alive``...) reads from the population:
#: the models fitted at each snapshot (:mod:`rules.predict.snapshot`)
PREDICTIVE = Stat("predictive", MODEL, doc="the purchase and spend models fitted on the population")


class PopulationError(LoyaltyError, ValueError):
    """A statistic declaration is invalid (the rule set compiler reports it with its line)."""


def check(stat: Stat) -> None:
    if stat.kind not in KINDS:
        raise PopulationError(f"unknown statistic kind {stat.kind!r} (one of {', '.join(KINDS)})")
    for role, name in (("metric", stat.metric), ("per", stat.per)):
        if not name:
            continue
        metric = CATALOGUE.get(name)
        if metric is None:
            raise PopulationError(f"unknown metric {name!r} (see the metric catalogue)")
        if metric.type not in NUMERIC:
            raise PopulationError(f"{role} {name!r} is not a number")
    if stat.kind != "count" and not stat.metric:
        raise PopulationError(f"a {stat.kind} needs a metric")
    if stat.kind == "ratio" and not stat.per:
        raise PopulationError("a ratio needs 'per' (the denominator metric)")
    if stat.kind in ("percentile", "pareto") and not 0 < stat.at <= 100:
        raise PopulationError(f"{stat.kind} 'at'/'share' must be in (0, 100], got {stat.at}")
    if stat.kind in ("percentile", "pareto") and CATALOGUE[stat.metric].type == "double" \
            and not CATALOGUE[stat.metric].money:
        raise PopulationError(f"{stat.kind} of {stat.metric!r}: only integer and money metrics")


# -- the aggregate ---------------------------------------------------------------------------


def bucket(value: int, exact: bool) -> int:
    """Bucket key of a value (minor units for money); keys sort as values do."""
    if exact or value == 0:
        return value
    k = 1 + _MAPPING.key(abs(value))
    return k if value > 0 else -k


@dataclass(slots=True)
class Spec:
    """The statistics of the loaded rule sets, grouped by what they aggregate."""

    stats: dict[str, Stat]
    wheres: dict[str, Any] = field(init=False)  # CEL source -> compiled program
    where_names: dict[str, tuple[str, ...]] = field(init=False)
    # "metric <op> number" conditions, checked without CEL: (metric, op, number)
    simple: dict[str, tuple[str, Any, float]] = field(init=False)
    metrics: tuple[str, ...] = field(init=False)
    # aggregate parts: statistics over the same metric and population share one
    # (r20..r80 read one histogram): part key -> (metric, per, where, distribution?)
    parts: dict[str, tuple[str, str, str, bool]] = field(init=False)
    part_of: dict[str, str] = field(init=False)  # statistic name -> part key
    models: bool = field(init=False)  # the predictive models are fitted

    def __post_init__(self) -> None:
        self.wheres, self.where_names, self.simple = {}, {}, {}
        self.parts, self.part_of = {}, {}
        self.models = False
        names: set[str] = set()
        for st in self.stats.values():
            if st.kind == MODEL:
                self.models = True
                continue
            if st.where not in self.wheres:
                tokens = tokenize(st.where)
                found = tuple(dict.fromkeys(t.text for _, t in free_identifiers(tokens)))
                unknown = [n for n in found if n not in CATALOGUE]
                if unknown:
                    raise PopulationError(f"where: unknown metric {unknown[0]!r}")
                self.wheres[st.where] = cel.compile(st.where)
                self.where_names[st.where] = found
                m = _SIMPLE.match(st.where)
                if m and CATALOGUE[m[1]].type in NUMERIC and not CATALOGUE[m[1]].money:
                    self.simple[st.where] = (m[1], _OPS[m[2]], float(m[3]))
            names |= {n for n in (st.metric, st.per) if n}
            dist = st.kind in ("percentile", "pareto")
            key = f"{'dist' if dist else 'sum'}:{st.metric}:{st.per}:{st.where}"
            self.parts[key] = (st.metric, st.per, st.where, dist)
            self.part_of[st.name] = key
        self.metrics = tuple(sorted(names))


def initialize(spec: Spec) -> dict[str, Any]:
    """An empty aggregate (JSON-ready): client count, currency exponent, and per part either
    ``{n, sum, per}`` or a distribution ``{bucket key: [count, sum, min, max]}``."""
    out: dict[str, Any] = {"clients": 0, "exponent": 0}
    for key, (_m, _p, _w, dist) in spec.parts.items():
        out[key] = {} if dist else {"n": 0, "sum": 0, "per": 0}
    if spec.models:
        out[MODEL] = predict.initialize()
    return out


def update(spec: Spec, agg: dict[str, Any], view: MetricView) -> None:
    """Fold one client (its metrics at the snapshot instant) into ``agg``."""
    if not view.s.has_purchase:
        return
    agg["clients"] += 1
    if view.exponent > agg["exponent"]:
        agg["exponent"] = view.exponent
    if spec.models:
        predict.update(agg[MODEL], inputs_of(view))
    member: dict[str, bool] = {}
    for where, program in spec.wheres.items():
        if where == "has_purchase":
            member[where] = True
            continue
        simple = spec.simple.get(where)
        if simple is not None:
            member[where] = simple[1](view.raw(simple[0]), simple[2])
            continue
        names = spec.where_names[where]
        try:
            member[where] = program.execute({n: view.cel(n) for n in names}) is True
        except Exception:  # a failing condition counts as "not in the population"
            member[where] = False
    for key, (metric, per, where, dist) in spec.parts.items():
        if not member[where]:
            continue
        part = agg[key]
        if not dist:
            part["n"] += 1
            if metric:
                part["sum"] += view.raw(metric)
            if per:
                part["per"] += view.raw(per)
            continue
        add(part, view.raw(metric), not CATALOGUE[metric].money)


def add(part: dict[str, list[int]], value: int, exact: bool) -> None:
    """Count one value in a distribution part (``exact``: one bucket per value)."""
    k = str(bucket(value, exact))
    b = part.get(k)
    if b is None:
        part[k] = [1, value, value, value]
    else:
        b[0] += 1
        b[1] += value
        if value < b[2]:
            b[2] = value
        if value > b[3]:
            b[3] = value


def merge(spec: Spec, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A new aggregate of both (commutative and associative: sums, mins and maxes)."""
    out: dict[str, Any] = {"clients": a["clients"] + b["clients"], "exponent": max(a["exponent"], b["exponent"])}
    if spec.models:
        out[MODEL] = predict.merge(a[MODEL], b[MODEL])
    for key, (_m, _p, _w, dist) in spec.parts.items():
        pa, pb = a[key], b[key]
        if not dist:
            out[key] = {k: pa[k] + pb[k] for k in ("n", "sum", "per")}
            continue
        merged = {k: list(v) for k, v in pa.items()}
        for k, v in pb.items():
            m = merged.get(k)
            if m is None:
                merged[k] = list(v)
            else:
                merged[k] = [m[0] + v[0], m[1] + v[1], min(m[2], v[2]), max(m[3], v[3])]
        out[key] = merged
    return out


def _sorted(part: dict[str, list[int]]) -> list[list[int]]:
    return [part[k] for k in sorted(part, key=int)]


def percentile(part: dict[str, list[int]], p: float) -> int | None:
    """Nearest rank over the buckets: the max of the bucket holding rank ceil(p% * n)."""
    rows = _sorted(part)
    n = sum(r[0] for r in rows)
    if n == 0:
        return None
    rank = max(1, math.ceil(p * n / 100 - 1e-9))
    seen = 0
    for count, _sum, _lo, hi in rows:
        seen += count
        if seen >= rank:
            return hi
    return rows[-1][3]


def pareto(part: dict[str, list[int]], share: float) -> int | None:
    """The smallest value v such that the clients with values above v hold under ``share``%
    of the total (buckets in descending order; see the module docstring)."""
    rows = [r for r in _sorted(part)[::-1] if r[3] > 0]  # buckets hold one sign
    total = sum(r[1] for r in rows)
    if total <= 0:
        return None
    limit = share * total / 100
    above = 0  # revenue of the buckets before this one (all values greater)
    cut = None
    for _count, amount, lo, hi in rows:
        if above >= limit:
            break
        # one value (every client of it has `above` before it), or even the smallest value of
        # the bucket has under the limit before it: the whole bucket is in
        if lo == hi or above + amount - lo < limit:
            cut = lo
        else:
            cut = hi
            break
        above += amount
    return cut


def result(spec: Spec, agg: dict[str, Any]) -> dict[str, Any]:
    """The values (``population.<name>``); a statistic over an empty population is 0."""
    scale = 10 ** agg["exponent"]
    out: dict[str, Any] = {}
    for name, st in spec.stats.items():
        if st.kind == MODEL:
            out[name] = predict.result(agg[MODEL])
            continue
        part = agg[spec.part_of[name]]
        value: Any
        if st.kind == "count":
            value = part["n"]
        elif st.kind == "mean":
            value = part["sum"] / part["n"] if part["n"] else None
        elif st.kind == "ratio":
            value = part["sum"] / part["per"] if part["per"] else None
        elif st.kind == "percentile":
            value = percentile(part, st.at)
        else:
            value = pareto(part, st.at)
        if value is None:
            value = 0
        if st.money:
            value = value / scale
        if st.cel_type == "double":
            value = float(value)
        out[name] = value
    return out


def declare(name: str, raw: Any, params: dict[str, Any]) -> Stat:
    """A ``population:`` entry of a rule set: ``{percentile: days_since_last_purchase,
    at: 20, where: "visits_12m >= 1"}``; ``at``/``share`` may name a parameter."""
    if not isinstance(raw, dict):
        raise PopulationError(f"population statistic {name!r} must be a mapping")
    kinds = [k for k in KINDS if k in raw]
    if len(kinds) != 1:
        raise PopulationError(f"population statistic {name!r} needs exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    allowed = {kind, "at", "share", "per", "where", "description", "fixed"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PopulationError(f"unknown key {unknown[0]!r} in population statistic {name!r}")
    metric = raw[kind] if kind != "count" else ""
    if kind == "count" and raw[kind] not in (None, True, "clients"):
        raise PopulationError("count takes no metric: write 'count: clients' and a 'where'")
    at: Any = raw.get("share" if kind == "pareto" else "at", 0)
    if isinstance(at, str):
        if at not in params:
            raise PopulationError(f"{name}: {at!r} is not a parameter")
        at = params[at]
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        raise PopulationError(f"{name}: 'at'/'share' must be a number")
    where = raw.get("where", "has_purchase")
    if not isinstance(where, str) or not where.strip():
        raise PopulationError(f"{name}: 'where' must be a CEL condition")
    stat = Stat(name, kind, str(metric or ""), str(raw.get("per") or ""), float(at), where.strip(),
                str(raw.get("description", "")))
    check(stat)
    return stat


def sample(stat: Stat) -> Any:
    """A stand-in value for type checks before any snapshot exists."""
    if stat.kind == MODEL:
        return {}
    return 1.5 if stat.cel_type == "double" else 1


# -- snapshots -------------------------------------------------------------------------------

CADENCES = ("day", "week", "month")


def next_instant(after: int, cadence: str, cal: Any) -> int:
    """The first snapshot instant strictly after ``after`` (epoch s): the next business
    midnight, Monday midnight or first of the month (``cal``: a BusinessCalendar)."""
    if cadence == "month":
        return int(cal.month_start(cal.month(after) + 1))
    day = cal.day(after) + 1
    if cadence == "week":
        day += (7 - cal.date_of_day(day).weekday()) % 7
    return int(cal.day_start(day))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The population at ``instant`` (epoch s): the values rules read."""

    instant: int
    values: dict[str, Any]
    clients: int
    aggregate: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        body = orjson.dumps([self.instant, self.values], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()[:12]


def snapshot(spec: Spec, instant: int, agg: dict[str, Any]) -> Snapshot | None:
    """The snapshot of a merged aggregate; None when no client has a purchase yet."""
    if agg["clients"] == 0:
        return None
    return Snapshot(instant, result(spec, agg), agg["clients"], agg)
