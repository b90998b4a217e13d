"""The metric catalogue: every name a rule condition may use, its CEL type and how it moves
with time when no receipt arrives.

Time behaviour (``kind``), which ``next_due`` relies on:

* ``static``: changes only with a receipt or a profile event.
* ``days``: whole days since an anchor instant, ``floor((t - anchor) / 1 day)``; steps up at
  ``anchor + n days`` exactly. ``-1`` when the anchor is unknown. Must be compared directly
  (``days_since_last_purchase >= 20``) so the step that flips a condition can be found.
* ``years``: age in whole years; steps up on birthdays (start of the business day).
* ``daily``: a calendar window of N business days ending today; changes when a day leaves
  the window (business midnight).
* ``monthly``: calendar months in the business time zone; changes at month starts.
* ``model``: a prediction of the population's fitted models (:mod:`rules.metrics.predictive`);
  changes at business midnights, one way between two purchases. Must be compared directly.
* ``countdown``: whole business days until the next yearly date (a birthday), 0 on the day,
  -1 when unknown; steps down at every business midnight and jumps back up the day after
  (:mod:`rules.metrics.profile`). Must be compared directly, like ``days``.

Money metrics are exact integer minor units inside the core; rules see them as doubles in
major units (``revenue_30d >= 5000.0``) and outputs carry them as decimal strings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from rules.calendar import DAY_S, BusinessCalendar
from rules.inputs.receipts import CURRENCY_EXPONENT
from rules.record.state import CATEGORY_MONTHS, ClientState, cancels, purchase_day_bits

Fn = Callable[["MetricView"], Any]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: str  # int | double | string | bool | map | list
    kind: str  # static | days | years | daily | monthly | countdown
    fn: Fn
    doc: str
    money: bool = False
    window: int = 0  # days for daily, months for monthly
    anchor: Callable[[ClientState], int | None] | None = None  # for kind "days"
    # personal data (a name, custom attributes, labels): never copied into a change event's
    # ``data.metrics`` (rules may read it; outputs that name a client may show it)
    personal: bool = False
    # a map of client-defined keys and value types (``attributes``): a key a rule names is
    # not filled in when absent (test it with ``has()``); its values type-check as any scalar
    dynamic: bool = False


def money_text(minor: int, exponent: int) -> str:
    """Exact decimal text of an amount in minor units: ``money_text(-5, 2) == "-0.05"``."""
    if exponent == 0:
        return str(minor)
    whole, part = divmod(abs(minor), 10**exponent)
    return f"{'-' if minor < 0 else ''}{whole}.{part:0{exponent}d}"


class MetricView:
    """Metrics of one client at one instant, computed lazily and memoized."""

    __slots__ = ("_memo", "cal", "day", "exponent", "models", "month", "s", "scale", "t")

    def __init__(self, state: ClientState, t: int, cal: BusinessCalendar, models: Any = None) -> None:
        self.s = state
        self.models = models  # the snapshot's fitted models (rules.predict.snapshot.Models)
        self.t = t
        self.cal = cal
        self.day = day = cal.day(t)
        self.month = cal.month_of_day(day)
        self._memo: dict[Any, Any] = {}
        self.exponent = exponent = CURRENCY_EXPONENT.get(state.currency, 2)
        self.scale = 10**exponent

    def raw(self, name: str) -> Any:
        """Value in core units (money as minor-unit int)."""
        memo = self._memo
        if name in memo:
            return memo[name]
        value = memo[name] = CATALOGUE[name].fn(self)
        return value

    def cel(self, name: str) -> Any:
        """Value as rules see it (money as double in major units)."""
        value = self.raw(name)
        if CATALOGUE[name].money:
            return value / self.scale
        return value

    def out(self, name: str) -> Any:
        """Value for JSON outputs (money as exact decimal string)."""
        value = self.raw(name)
        metric = CATALOGUE[name]
        if metric.money:
            if isinstance(value, int):
                return money_text(value, self.exponent)
            return f"{value / self.scale:.2f}"
        return value

    # shared computations
    def window(self, days: int) -> tuple[int, int, int]:
        """(visits, net revenue, returns) over the last ``days`` business days."""
        memo = self._memo
        cached = memo.get(days)
        if cached is not None:
            result: tuple[int, int, int] = cached
            return result
        lo, hi = self.day - days + 1, self.day
        visits = revenue = returns = 0
        rets = self.s.rets
        # (sale hash, amount) of full returns -> their days: a sale they cancel is no visit
        cancelled: dict[tuple[int, int], list[int]] = {}
        for r in rets:
            if r[3]:
                cancelled.setdefault((r[3], r[2]), []).append(r[1])
        for h, d, amount in self.s.sales:
            if lo <= d <= hi:
                revenue += amount
                ret_days = cancelled.get((h, amount)) if cancelled else None
                if ret_days is None or not any(cancels(rd, d) for rd in ret_days):
                    visits += 1
        for _h, d, amount, _o in rets:
            if lo <= d <= hi:
                revenue -= amount
                returns += 1
        result = memo[days] = (visits, revenue, returns)
        return result

    def months_back(self, n: int) -> list[list[int]]:
        """Buckets [visits, revenue] of the current month and the n-1 before it."""
        lo = self.month - n
        return [b for m, b in self.s.months.items() if lo < m <= self.month]

    def months_sums(self, n: int) -> tuple[int, int]:
        """(visits, revenue) of the current month and the n-1 before it."""
        key = -n  # window() memoizes under positive day counts
        cached = self._memo.get(key)
        if cached is None:
            lo, hi = self.month - n, self.month
            visits = revenue = 0
            for m, b in self.s.months.items():
                if lo < m <= hi:
                    visits += b[0]
                    revenue += b[1]
            cached = self._memo[key] = (visits, revenue)
        result: tuple[int, int] = cached
        return result

    def streak_anchor(self) -> int:
        bucket = self.s.months.get(self.month)
        return self.month if bucket and bucket[0] > 0 else self.month - 1


def _days_since(anchor: Callable[[ClientState], int | None]) -> Fn:
    def fn(v: MetricView) -> int:
        a = anchor(v.s)
        return -1 if a is None else (v.t - a) // DAY_S

    return fn


def _days_since_last(v: MetricView) -> int:  # the most read metric: no anchor call
    a = v.s.last_purchase
    return -1 if a is None else (v.t - a) // DAY_S


def _profile_time(key: str) -> Callable[[ClientState], int | None]:
    def anchor(s: ClientState) -> int | None:
        value = s.profile.get(key)
        return value if isinstance(value, int) else None

    return anchor


def _last(s: ClientState) -> int | None:
    return s.last_purchase


def _first(s: ClientState) -> int | None:
    return s.first_purchase


def _age(v: MetricView) -> int:
    born = v.s.profile.get("birth_date")
    return -1 if born is None else v.cal.age(date.fromisoformat(born), v.t)


def _streak(v: MetricView) -> int:
    m, n = v.streak_anchor(), 0
    while (b := v.s.months.get(m - n)) is not None and b[0] > 0:
        n += 1
    return n


def _min_month_revenue_3m(v: MetricView) -> int:
    m = v.streak_anchor()
    return min((v.s.months.get(m - i) or [0, 0])[1] for i in range(3))


def _category_totals(v: MetricView) -> dict[str, int]:
    """Item amounts per category over the category months (memoized: two metrics read it)."""
    memo = v._memo
    cached: dict[str, int] | None = memo.get("#cats")
    if cached is not None:
        return cached
    totals: dict[str, int] = {}
    for i in range(CATEGORY_MONTHS):
        for cat, amount in (v.s.cats.get(v.month - i) or {}).items():
            totals[cat] = totals.get(cat, 0) + amount
    memo["#cats"] = totals
    return totals


def _category_share(v: MetricView) -> dict[str, float]:
    totals = _category_totals(v)
    whole = sum(totals.values())
    return {c: a / whole for c, a in totals.items()} if whole > 0 else {}


def _top_category(v: MetricView) -> str:
    totals = _category_totals(v)
    return min(totals, key=lambda c: (-totals[c], c)) if totals else ""


def _purchase_days(v: MetricView) -> int:
    bits = v.s.pdays
    if bits < 0:  # a record written before purchase days were kept
        bits = purchase_day_bits(v.s, v.cal)[0]
    return bits.bit_count()


def _mean_interval(v: MetricView) -> float:
    """(last purchase day - first purchase day) / (purchase days - 1): bit 0 of the bitmap
    is the first day, its highest bit the last."""
    bits = v.s.pdays
    if bits < 0:
        bits = purchase_day_bits(v.s, v.cal)[0]
    n = bits.bit_count()
    return (bits.bit_length() - 1) / (n - 1) if n > 1 else 0.0


def _avg(revenue: int, visits: int) -> float:
    return revenue / visits if visits > 0 else 0.0


CATALOGUE: dict[str, Metric] = {}


def _add(name: str, type_: str, kind: str, fn: Fn, doc: str, **kw: Any) -> None:
    CATALOGUE[name] = Metric(name, type_, kind, fn, doc, **kw)


_add("lifetime_visits", "int", "static", lambda v: v.s.visits, "sale receipts ever, less fully refunded ones")
_add("lifetime_revenue", "double", "static", lambda v: v.s.revenue, "net revenue ever", money=True)
_add("lifetime_value", "double", "static", lambda v: v.s.revenue,
     "LTV: net revenue ever (same as lifetime_revenue)", money=True)
_add("lifetime_returns", "int", "static", lambda v: v.s.returns, "return receipts ever")
_add("lifetime_return_amount", "double", "static", lambda v: v.s.return_amount, "refunded ever", money=True)
_add("avg_check", "double", "static", lambda v: _avg(v.s.revenue, v.s.visits),
     "lifetime net revenue / lifetime visits", money=True)
_add("purchase_days", "int", "static", _purchase_days,
     "business days with a visit ever (several receipts of one day count once; a day whose "
     "every sale was fully refunded, none)")
_add("mean_interval_days", "double", "static", _mean_interval,
     "client's mean days between purchase days: (last purchase day - first purchase day) / "
     "(purchase_days - 1); 0.0 under 2 purchase days")
_add("has_purchase", "bool", "static", lambda v: v.s.last_purchase is not None, "at least one sale")
_add("last_store", "string", "static", lambda v: v.s.last_store or "", "store of the latest receipt")
_add("gender", "string", "static", lambda v: v.s.profile.get("gender", ""), "f, m, x or '' (profile)")
_add("city", "string", "static", lambda v: v.s.profile.get("city", ""), "city (profile)")
_add("tags", "list", "static", lambda v: list(v.s.profile.get("tags", [])), "CRM tags (profile)")
_add("has_profile", "bool", "static", lambda v: bool(v.s.profile), "a profile event was seen")
_add("has_welcome_bonus", "bool", "static", lambda v: "welcome_bonus_at" in v.s.profile,
     "welcome bonus given (profile)")
for _name, _anchor, _doc in (
    ("days_since_last_purchase", _last, "whole days since the latest sale"),
    ("days_since_first_purchase", _first, "whole days since the first sale (tenure)"),
    ("days_since_welcome_bonus", _profile_time("welcome_bonus_at"), "whole days since the welcome bonus"),
    ("days_since_registration", _profile_time("registered_at"), "whole days since registration"),
):
    _fn = _days_since_last if _anchor is _last else _days_since(_anchor)
    _add(_name, "int", "days", _fn, _doc + "; -1 if unknown", anchor=_anchor)
_add("age", "int", "years", _age, "age in whole years (profile birth_date); -1 if unknown")

def _window_field(n: int, i: int) -> Fn:
    def fn(v: MetricView) -> Any:
        return v.window(n)[i]

    return fn


def _window_avg(n: int) -> Fn:
    def fn(v: MetricView) -> Any:
        w = v.window(n)
        return _avg(w[1], w[0])

    return fn


def _months_field(n: int, i: int) -> Fn:
    def fn(v: MetricView) -> Any:
        return v.months_sums(n)[i]

    return fn


for _n in (7, 14, 30):
    _add(f"visits_{_n}d", "int", "daily", _window_field(_n, 0),
         f"visits in the last {_n} business days (today included)", window=_n)
    _add(f"revenue_{_n}d", "double", "daily", _window_field(_n, 1),
         f"net revenue in the last {_n} business days", money=True, window=_n)
    _add(f"avg_check_{_n}d", "double", "daily", _window_avg(_n),
         f"revenue_{_n}d / visits_{_n}d (0.0 with no visits)", money=True, window=_n)
_add("returns_30d", "int", "daily", lambda v: v.window(30)[2],
     "return receipts in the last 30 business days", window=30)

for _n in (1, 3, 6, 12):
    _label = "this_month" if _n == 1 else f"{_n}m"
    _add(f"visits_{_label}", "int", "monthly", _months_field(_n, 0),
         f"visits in the current calendar month and the {_n - 1} before it", window=_n)
    _add(f"revenue_{_label}", "double", "monthly", _months_field(_n, 1),
         f"net revenue in the current calendar month and the {_n - 1} before it", money=True, window=_n)
_add("visits_prev_month", "int", "monthly", lambda v: (v.s.months.get(v.month - 1) or [0, 0])[0],
     "visits in the previous calendar month", window=2)
_add("active_months_12m", "int", "monthly", lambda v: len([b for b in v.months_back(12) if b[0] > 0]),
     "months with a visit among the last 12 (current included)", window=12)
_add("active_months_streak", "int", "monthly", _streak,
     "consecutive calendar months with a visit, ending this month (or last month if none yet this month)", window=13)
_add("min_month_revenue_3m", "double", "monthly", _min_month_revenue_3m,
     "lowest monthly net revenue among the 3 months ending where active_months_streak ends", money=True, window=4)
_add(
    "category_share",
    "map",
    "monthly",
    _category_share,
    f"share of item amounts per category over the current and {CATEGORY_MONTHS - 1} previous months, "
    "e.g. category_share['coffee']; a category a rule names reads 0.0 when absent",
    window=CATEGORY_MONTHS,
)
_add("top_category", "string", "monthly", _top_category,
     "category with the largest item amount over the same months", window=CATEGORY_MONTHS)

#: Zero values of each CEL type, used to type-check expressions at load time.
SAMPLES: dict[str, Any] = {"int": 1, "double": 1.5, "string": "x", "bool": True, "map": {"coffee": 0.5}, "list": ["x"]}


def catalogue_markdown() -> str:
    lines = ["| metric | type | changes with time | meaning |", "|---|---|---|---|"]
    for m in CATALOGUE.values():
        lines.append(f"| `{m.name}` | {m.type} | {m.kind} | {m.doc} |")
    return "\n".join(lines)
