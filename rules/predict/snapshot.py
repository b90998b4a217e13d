"""The predictive models in a population snapshot: each client's model inputs, their
mergeable aggregate, and the fit.

Per client with a purchase, at the snapshot's business day (whole business days):

* ``x``: purchase days after the first (the ``purchase_days`` metric less one);
* ``t_x``: days from the first purchase day to the last;
* ``T``: days from the first purchase day to the snapshot's day;
* ``n`` and ``mean``: purchase days and the net revenue per purchase day in minor units
  (``lifetime_revenue / purchase_days``, rounded), the spend model's input.

The aggregate follows :mod:`rules.population`: :func:`initialize`, :func:`update` with one
client, :func:`merge` (sums of integers only, so any split and merge order give the same
aggregate), :func:`result` (the fit). Clients are grouped by their quantized inputs:
values up to :data:`EXACT` are exact, larger ones fall in logarithmic buckets of relative
accuracy :data:`RELATIVE_ACCURACY` (DDSketch's key mapping, like the money percentiles),
and each group keeps the exact sums of its values, so a group is fitted at its members'
mean. The aggregate's size is bounded by the number of groups, not of clients.
"""

from __future__ import annotations

from typing import Any

from ddsketch.mapping import LogarithmicMapping

from rules.predict.bgnbd import PurchaseModel, fit
from rules.predict.gamma_gamma import SpendModel, fit_spend

EXACT = 20  # days and purchase days up to this are grouped exactly
RELATIVE_ACCURACY = 0.03
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
#: the model whose P(alive) the metrics use (the other is fitted and reported too)
USED = "mbgnbd"
VARIANTS = ("bgnbd", "mbgnbd")
TIME_UNIT = "day"


def _q(value: int) -> str:
    return str(value) if value <= EXACT else f"~{_MAPPING.key(value)}"


def client_inputs(bits: int, base: int, day: int, revenue: int) -> tuple[int, int, int, int, int] | None:
    """``(x, t_x, T, n, mean)`` from the purchase-day bitmap (bit i: business day
    ``base + i``), the snapshot's business day and the net lifetime revenue; None without a
    purchase day. A purchase dated after ``day`` (not possible in a snapshot) counts at it."""
    if bits <= 0:
        return None
    first = base + (bits & -bits).bit_length() - 1
    last = base + bits.bit_length() - 1
    n = bits.bit_count()
    t_x = last - first
    big_t = max(day - first, t_x)
    mean = (2 * revenue + n) // (2 * n)  # revenue / n rounded half up, exact in integers
    return n - 1, t_x, big_t, n, mean


def initialize() -> dict[str, Any]:
    """An empty aggregate: ``{"purchase": {key: [clients, sum x, sum t_x, sum T]},
    "spend": {key: [clients, sum n, sum mean]}}`` (JSON-ready)."""
    return {"purchase": {}, "spend": {}}


def _add(part: dict[str, list[int]], key: str, values: tuple[int, ...]) -> None:
    row = part.get(key)
    if row is None:
        part[key] = [1, *values]
        return
    row[0] += 1
    for i, v in enumerate(values, 1):
        row[i] += v


def update(agg: dict[str, Any], inputs: tuple[int, int, int, int, int] | None) -> None:
    """Fold one client's :func:`client_inputs` into ``agg``."""
    if inputs is None:
        return
    x, t_x, big_t, n, mean = inputs
    _add(agg["purchase"], f"{_q(x)}|{_q(t_x)}|{_q(big_t)}", (x, t_x, big_t))
    if mean > 0:
        _add(agg["spend"], f"{_q(n)}|~{_MAPPING.key(mean)}", (n, mean))


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A new aggregate of both (sums: commutative and associative)."""
    out: dict[str, Any] = {}
    for part in ("purchase", "spend"):
        merged = {k: list(v) for k, v in a[part].items()}
        for k, v in b[part].items():
            row = merged.get(k)
            merged[k] = list(v) if row is None else [p + q for p, q in zip(row, v, strict=True)]
        out[part] = merged
    return out


def _rows(part: dict[str, list[int]]) -> list[list[int]]:
    return [part[k] for k in sorted(part)]


def result(agg: dict[str, Any]) -> dict[str, Any]:
    """The fitted models, JSON-ready: ``{"bgnbd": {...} | None, "mbgnbd": ..., "gamma_gamma":
    ..., "used": USED, "time_unit": "day", "clients": n, "groups": g}``; a model that cannot be
    fitted (too few clients, see :mod:`rules.predict.bgnbd`) is None."""
    purchase = _rows(agg["purchase"])
    rows = [(round(sx / c), stx / c, st / c, c) for c, sx, stx, st in purchase]
    # a group's x is exact up to EXACT; above, its mean x (rounded: x is a count)
    out: dict[str, Any] = {"used": USED, "time_unit": TIME_UNIT,
                           "clients": sum(r[0] for r in purchase), "groups": len(purchase)}
    for variant in VARIANTS:
        m = fit(rows, variant)
        out[variant] = None if m is None else {"r": m.r, "alpha": m.alpha, "a": m.a, "b": m.b,
                                               "time_unit": TIME_UNIT}
    spend = [(round(sn / c), sm / c, c) for c, sn, sm in _rows(agg["spend"])]
    s = fit_spend(spend)
    out["gamma_gamma"] = None if s is None else {"p": s.p, "q": s.q, "v": s.v}
    return out


class Models:
    """The fitted models of a snapshot, as the metrics read them (None: not fitted)."""

    __slots__ = ("purchase", "spend")

    def __init__(self, purchase: PurchaseModel | None, spend: SpendModel | None) -> None:
        self.purchase = purchase
        self.spend = spend

    @classmethod
    def of(cls, values: dict[str, Any] | None) -> Models | None:
        """From a snapshot's ``predictive`` value (None when the snapshot has none)."""
        if not values:
            return None
        p = values.get(values.get("used", USED))
        g = values.get("gamma_gamma")
        purchase = None if p is None else PurchaseModel(values.get("used", USED), float(p["r"]),
                                                         float(p["alpha"]), float(p["a"]), float(p["b"]))
        spend = None if g is None else SpendModel(float(g["p"]), float(g["q"]), float(g["v"]))
        return cls(purchase, spend)
