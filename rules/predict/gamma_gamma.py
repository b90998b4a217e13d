"""The Gamma-Gamma model of spend (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
curves for customer base analysis"; Fader & Hardie, "The Gamma-Gamma model of monetary
value"): a client's purchases are worth z ~ Gamma(p, nu) each, with nu ~ Gamma(q, v) across
clients, independent of how often they buy.

Input per client: ``n`` >= 1 transactions and their mean value ``mean_value`` > 0 (money in
any unit; ``v`` and every value derived here are in that unit). The density of the mean of
n transactions, integrated over nu, is

    Gamma(pn+q) / (Gamma(pn) Gamma(q)) v^q n^(pn) mean^(pn-1) / (v + n mean)^(pn+q).

The fit maximizes it over grouped rows ``(n, mean_value, weight)`` like
:func:`rules.predict.bgnbd.fit` (analytic gradient, log-parameters within ``LOG_BOUNDS``, no
penalizer, deterministic, rounded to 6 significant digits); None, never an error, with fewer
than :data:`MIN_SPENDERS` clients or no convergence to finite values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import digamma, gammaln

from rules.predict.bgnbd import PurchaseModel, Vector, expected_purchases, maximum_likelihood, round6, wsum

MIN_SPENDERS = 10  # clients (total weight) with n >= 1 and a positive mean, at least
#: the box of the log-parameters (p, q, v), as in :data:`rules.predict.bgnbd.LOG_BOUNDS`: v's
#: is wider, as it scales with the money unit and with q / p (the population's mean spend is
#: p v / (q - 1))
LOG_BOUNDS = ((-15.0, 10.0), (-15.0, 10.0), (-40.0, 60.0))
_HUGE = 1e300


@dataclass(frozen=True, slots=True)
class SpendModel:
    """Fitted parameters (v in the unit of the means)."""

    p: float
    q: float
    v: float


class _Rows:
    """Valid rows as arrays: n >= 1, mean_value > 0, weight > 0 (the others are skipped)."""

    def __init__(self, rows: Sequence[tuple[int, float, int]]) -> None:
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        n, mean, w = arr.T
        ok = np.isfinite(arr).all(axis=1) & (n >= 1) & (mean > 0) & (w > 0)
        self.n, self.mean, self.w = n[ok], mean[ok], w[ok]
        self.total = float(self.w.sum())
        self.log_mean, self.log_n, self.money = np.log(self.mean), np.log(self.n), self.n * self.mean


def _negloglik(theta: Vector, d: _Rows) -> tuple[float, Vector]:
    """Minus the mean log-likelihood per client and its gradient in the log-parameters."""
    p, q, v = (float(x) for x in np.exp(theta))
    pn = p * d.n
    log_vm = np.log(v + d.money)
    ll = (gammaln(pn + q) - gammaln(pn) - gammaln(q) + q * math.log(v) + (pn - 1.0) * d.log_mean
          + pn * d.log_n - (pn + q) * log_vm)
    w = d.w / d.total
    value = -wsum(w, ll)
    psi = digamma(pn + q)
    dp = d.n * (psi - digamma(pn) + d.log_mean + d.log_n - log_vm)
    dq = psi - digamma(q) + math.log(v) - log_vm
    dv = q / v - (pn + q) / (v + d.money)
    grad = -np.array([p * wsum(w, dp), q * wsum(w, dq), v * wsum(w, dv)])
    if not (math.isfinite(value) and np.isfinite(grad).all()):
        return _HUGE, np.zeros_like(theta)
    return value, grad


def spend_log_likelihood(s: SpendModel, rows: Sequence[tuple[int, float, int]]) -> float:
    """The model's log-likelihood of the (valid) rows, summed over the clients."""
    d = _Rows(rows)
    if d.total == 0:
        return 0.0
    return -_negloglik(np.log(np.array([s.p, s.q, s.v])), d)[0] * d.total


def fit_spend(rows: Sequence[tuple[int, float, int]]) -> SpendModel | None:
    """Maximum likelihood over ``(n, mean_value, weight)`` rows (rows with n < 1,
    mean_value <= 0 or weight <= 0 are skipped); None when the data cannot support a fit."""
    d = _Rows(rows)
    if d.total < MIN_SPENDERS:
        return None
    # start: p = 1, q = 2 and the population's mean spend p v / (q - 1) = the mean of the means
    start = np.array([0.0, math.log(2.0), math.log(wsum(d.w, d.mean) / d.total)])
    best = maximum_likelihood(lambda th: _negloglik(th, d), start, LOG_BOUNDS)
    if best is None:
        return None
    p, q, v = (round6(float(x)) for x in np.exp(best))
    return SpendModel(p, q, v)


def expected_spend(s: SpendModel, n: int, mean_value: float) -> float:
    """E[value of a transaction | n transactions of mean ``mean_value``]: the weighted
    average (q-1)/(pn+q-1) p v/(q-1) + pn/(pn+q-1) mean_value of the population mean
    p v / (q - 1) and the client's own mean; for n = 0, the population mean. With q <= 1 the
    population mean is infinite: ``mean_value`` itself is returned (whatever n)."""
    if s.q <= 1:
        return mean_value
    population = s.p * s.v / (s.q - 1)
    if n <= 0:
        return population
    own = s.p * n / (s.p * n + s.q - 1)
    return (1 - own) * population + own * mean_value


def clv(purchase_model: PurchaseModel, spend_model: SpendModel, x: int, t_x: float, T: float, n: int,
        mean_value: float, days: float = 365) -> float:
    """The expected value of the client's purchases in the next ``days`` days:
    :func:`~rules.predict.bgnbd.expected_purchases` over ``days`` times
    :func:`expected_spend`. Undiscounted (no interest rate), in the unit of ``mean_value``."""
    return expected_purchases(purchase_model, days, x, t_x, T) * expected_spend(spend_model, n, mean_value)
