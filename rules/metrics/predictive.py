"""Predictive metrics: the population's fitted purchase and spend models (a population
snapshot's ``predictive`` value, :mod:`rules.predict.snapshot`) applied to one client.

* ``p_alive``: the probability that the client is still a customer;
* ``expected_purchases_90d``: purchase days expected in the next 90 days;
* ``predicted_clv_12m``: expected purchase days in the next 365 days times the expected net
  spend per purchase day (undiscounted, money);
* ``expected_days_to_next_purchase``: if the client is still a customer, the mean days until
  their next purchase day.

Time: the inputs are whole business days (``T``: from the first purchase day to today), so
the values change only at business midnights and, with no new purchase, move one way (P
alive and the expectations fall, the days to the next purchase grow). A comparison with a
threshold therefore flips once at most between two purchases: :func:`first_flip` finds the
business midnight where it does by bisection, which makes ``next_due`` exact.

Neutral values, when the snapshot has no fitted model (too few clients, see
``docs/explanation/predictive.md``) or the client has no purchase: ``p_alive`` 1.0,
``expected_purchases_90d`` 0.0, ``predicted_clv_12m`` 0 and
``expected_days_to_next_purchase`` -1.0. Without a fitted spend model, the client's own mean
spend per purchase day is used.
"""

from __future__ import annotations

import operator
from typing import Any

from rules.calendar import BusinessCalendar
from rules.metrics.base import CATALOGUE, MetricView, _add
from rules.predict.bgnbd import days_to_next_purchase, expected_purchases, p_alive
from rules.predict.gamma_gamma import expected_spend
from rules.predict.snapshot import Models, client_inputs
from rules.record.state import ClientState, purchase_day_bits

NAMES = ("p_alive", "expected_purchases_90d", "predicted_clv_12m", "expected_days_to_next_purchase")
NEUTRAL: dict[str, Any] = {"p_alive": 1.0, "expected_purchases_90d": 0.0, "predicted_clv_12m": 0,
                           "expected_days_to_next_purchase": -1.0}
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
        "==": operator.eq, "!=": operator.ne}


def inputs_of(v: MetricView) -> tuple[int, int, int, int, int] | None:
    """The client's model inputs at the view's day (:func:`rules.predict.snapshot.client_inputs`)."""
    memo = v._memo
    if "#pred" in memo:
        cached: tuple[int, int, int, int, int] | None = memo["#pred"]
        return cached
    bits, base = (v.s.pdays, v.s.pday0) if v.s.pdays >= 0 else purchase_day_bits(v.s, v.cal)
    found = memo["#pred"] = client_inputs(bits, base, v.day, v.s.revenue)
    return found


def _raw(name: str, models: Models | None, inputs: tuple[int, int, int, int, int] | None) -> Any:
    """A predictive metric in core units (money: minor units) from a client's model inputs."""
    if models is None or models.purchase is None or inputs is None:
        return NEUTRAL[name]
    m = models.purchase
    x, t_x, big_t, n, mean = inputs
    if name == "p_alive":
        return p_alive(m, x, t_x, big_t)
    if name == "expected_purchases_90d":
        return expected_purchases(m, 90, x, t_x, big_t)
    if name == "expected_days_to_next_purchase":
        return days_to_next_purchase(m, x, big_t)
    spend = float(mean) if models.spend is None or mean <= 0 else expected_spend(models.spend, n, mean)
    return max(0, round(expected_purchases(m, 365, x, t_x, big_t) * spend))


def _value(name: str) -> Any:
    def fn(v: MetricView) -> Any:
        return _raw(name, v.models, inputs_of(v))

    return fn


_add("p_alive", "double", "model", _value("p_alive"),
     "probability that the client is still a customer (BG/NBD family fitted on the population; "
     "1.0 without a fitted model)")
_add("expected_purchases_90d", "double", "model", _value("expected_purchases_90d"),
     "purchase days expected in the next 90 days (0.0 without a fitted model)")
_add("predicted_clv_12m", "double", "model", _value("predicted_clv_12m"),
     "expected purchase days in the next 365 days x expected net spend per purchase day "
     "(Gamma-Gamma), undiscounted", money=True)
_add("expected_days_to_next_purchase", "double", "model", _value("expected_days_to_next_purchase"),
     "if still a customer, the mean days until the next purchase day (-1.0 without a fitted model)")
assert all(CATALOGUE[n].kind == "model" for n in NAMES)


def with_predictions(names: tuple[str, ...] | set[str]) -> tuple[str, ...]:
    """A change event's metrics: a dimension that reads one prediction carries all four."""
    if any(CATALOGUE[m].kind == "model" for m in names):
        return tuple(sorted({*names, *NAMES}))
    return tuple(names)


def first_flip(state: ClientState, metric: str, op: str, value: float, after: int, until: int,
               cal: BusinessCalendar, models: Models | None) -> int | None:
    """The first business midnight in (after, until] at which ``metric op value`` differs from
    its truth at ``after`` (None: it does not), by bisection over business days (the value
    moves one way until the next purchase, see the module docstring)."""
    if models is None or models.purchase is None:
        return None
    compare = _OPS[op]
    view = MetricView(state, after, cal, models)
    inputs = inputs_of(view)
    if inputs is None:
        return None
    x, t_x, big_t, n, mean = inputs
    first = view.day - big_t  # the first purchase day (T counts from it)
    scale = view.scale if CATALOGUE[metric].money else 1

    def truth(day: int) -> bool:
        return bool(compare(_raw(metric, models, (x, t_x, max(day - first, t_x), n, mean)) / scale, value))

    lo, hi = cal.day(after), cal.day(until)
    if hi <= lo:
        return None
    start = truth(lo)
    if truth(hi) == start:
        return None
    while hi - lo > 1:  # truth(lo) == start != truth(hi)
        mid = (lo + hi) // 2
        if truth(mid) == start:
            lo = mid
        else:
            hi = mid
    c = cal.day_start(hi)
    return c if after < c <= until else None
