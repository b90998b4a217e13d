"""Purchase models of the BG/NBD family, per day: the likelihood, its fit and the closed
forms per client.

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive, a client buys at a Poisson rate lambda ~ Gamma(r, alpha); after each *repeat*
  purchase they drop out with probability p ~ Beta(a, b). A one-time buyer cannot have
  dropped out: P(alive) = 1 whatever their silence.
* **MBG/NBD** (Batislam, Denizel & Filiztekin 2007): the same, but the client may also drop
  out right after the first purchase, so a one-time buyer's P(alive) falls with time too.

Per client: ``x`` repeat purchase days, ``t_x`` days from the first purchase day to the
last, ``T`` days from the first purchase day to now. With x and t_x fixed (no purchase),
:func:`p_alive` and :func:`expected_purchases` do not increase with T and
:func:`days_to_next_purchase` does not decrease: :mod:`rules.metrics.predictive` relies on
it to find the day a threshold is crossed by bisection.

The fit maximizes the likelihood over grouped rows ``(x, t_x, T, weight)`` with SciPy
(L-BFGS-B on the logarithms of the parameters from a fixed start, Nelder-Mead first when it
does not converge), deterministically;
the parameters are rounded to 6 significant digits. It gives None, never an error, when the
data cannot support it (:data:`MIN_CLIENTS`, :data:`MIN_REPEATERS`) or the optimizer does
not converge to finite values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

MIN_CLIENTS = 100  # clients with a purchase, at least
MIN_REPEATERS = 10  # clients with a repeat purchase day, at least
VARIANTS = ("bgnbd", "mbgnbd")


@dataclass(frozen=True, slots=True)
class PurchaseModel:
    """Fitted parameters (time unit: day)."""

    variant: str  # "bgnbd" | "mbgnbd"
    r: float
    alpha: float
    a: float
    b: float


def _round(value: float) -> float:
    return float(f"{value:.6g}")


class _Rows:
    """The fit's rows as arrays, with each column's distinct values: the special functions
    and logarithms are computed once per distinct value (a few hundred), not per row."""

    def __init__(self, arr: np.ndarray) -> None:
        self.x, self.t_x, self.big_t, self.w = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
        self.ux, self.ix = np.unique(self.x, return_inverse=True)
        self.ut, self.it = np.unique(self.t_x, return_inverse=True)
        self.uT, self.iT = np.unique(self.big_t, return_inverse=True)
        self.repeat = self.x > 0


def _loglik(params: np.ndarray, d: _Rows, variant: str) -> float:
    r, alpha, a, b = np.exp(params)
    x, ux = d.x, d.ux
    log_t = np.log(alpha + d.uT)[d.iT]
    log_tx = np.log(alpha + d.ut)[d.it]
    rx = r + x
    if variant == "bgnbd":
        head = (gammaln(r + ux) - gammaln(r) + r * np.log(alpha) + betaln(a, b + ux) - betaln(a, b))[d.ix]
        a4 = (np.log(a) - np.log(b + np.maximum(ux, 1) - 1))[d.ix] - rx * log_tx
        ll = head + np.logaddexp(-rx * log_t, np.where(d.repeat, a4, -np.inf))
    else:
        head = (gammaln(r + ux) - gammaln(r) + r * np.log(alpha) + betaln(a, b + ux + 1) - betaln(a, b))[d.ix]
        a4 = (np.log(a) - np.log(b + ux))[d.ix] + rx * (log_t - log_tx)
        ll = head - rx * log_t + np.logaddexp(a4, 0.0)
    return float(np.dot(d.w, ll))


def fit(rows: Sequence[tuple[int, float, float, int]], variant: str = "bgnbd") -> PurchaseModel | None:
    """Maximum likelihood over ``(x, t_x, T, weight)`` rows (weight: clients with those
    inputs); None when the data cannot support a fit (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown purchase model {variant!r}")
    d = _Rows(np.array(rows, dtype=float).reshape(-1, 4))
    total = float(d.w.sum())
    if total < MIN_CLIENTS or float(d.w[d.repeat].sum()) < MIN_REPEATERS or not (d.big_t > 0).any():
        return None

    def objective(p: np.ndarray) -> float:
        if max(abs(float(v)) for v in p) > 30:
            return 1e300
        value = -_loglik(p, d, variant) / total
        return value if math.isfinite(value) else 1e300

    start = np.array([0.0, math.log(max(1.0, float(np.dot(d.w, d.big_t)) / total)), 0.0, 0.0])
    best = maximum_likelihood(objective, start)
    if best is None:
        return None
    r, alpha, a, b = (float(v) for v in np.exp(best))
    if not all(math.isfinite(v) and v > 0 for v in (r, alpha, a, b)):
        return None
    return PurchaseModel(variant, _round(r), _round(alpha), _round(a), _round(b))


def maximum_likelihood(objective: Callable[[np.ndarray], float], start: np.ndarray) -> np.ndarray | None:
    """L-BFGS-B (numerical gradient) from ``start``; Nelder-Mead then L-BFGS-B again if it
    ran out of iterations or ended on no finite value (a line search that cannot improve
    further, L-BFGS-B's usual end with a numerical gradient, is an optimum). None when no
    finite optimum was found."""
    found = minimize(objective, start, method="L-BFGS-B", options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 1000})
    if found.status == 1 or not math.isfinite(found.fun) or found.fun >= 1e300:
        simplex = minimize(objective, start, method="Nelder-Mead",
                           options={"maxiter": 4000, "xatol": 1e-9, "fatol": 1e-12})
        found = minimize(objective, simplex.x, method="L-BFGS-B",
                         options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 1000})
    best: np.ndarray = found.x
    value = objective(best)
    return best if math.isfinite(value) and value < 1e300 else None


def _odds_dead(m: PurchaseModel, x: int, t_x: float, big_t: float) -> float:
    """P(dead) / P(alive) given the history (0.0: alive for sure)."""
    if m.variant == "bgnbd":
        if x == 0:
            return 0.0
        log_odds = math.log(m.a / (m.b + x - 1))
    else:
        log_odds = math.log(m.a / (m.b + x))
    log_odds += (m.r + x) * (math.log(m.alpha + big_t) - math.log(m.alpha + t_x))
    return math.exp(min(log_odds, 700.0))


def p_alive(m: PurchaseModel, x: int, t_x: float, big_t: float) -> float:
    """The probability that the client is still alive (BG/NBD eq. (11); MBG/NBD's)."""
    return 1.0 / (1.0 + _odds_dead(m, x, t_x, big_t))


def expected_purchases(m: PurchaseModel, t: float, x: int, t_x: float, big_t: float) -> float:
    """E[X(t) | x, t_x, T]: purchase days expected in the next ``t`` days (BG/NBD eq. (10);
    MBG/NBD's counterpart)."""
    r, alpha, a, b = m.r, m.alpha, m.a, m.b
    z = t / (alpha + big_t + t)
    shrink = (m.r + x) * (math.log(alpha + big_t) - math.log(alpha + big_t + t))
    if m.variant == "bgnbd":
        head = (a + b + x - 1) / (a - 1)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    else:
        head = (a + b + x) / (a - 1)
        hyp = hyp2f1(r + x, b + x + 1, a + b + x, z)
    value = head * (1.0 - float(hyp) * math.exp(shrink)) / (1.0 + _odds_dead(m, x, t_x, big_t))
    if not math.isfinite(value) or value < 0:
        # the hypergeometric series failed: bound by the purchases of an alive client
        value = p_alive(m, x, t_x, big_t) * (r + x) / (alpha + big_t) * t
    return value


def days_to_next_purchase(m: PurchaseModel, x: int, big_t: float) -> float:
    """If the client is alive, the mean days to their next purchase day:
    1 / E[lambda | alive, x, T] = (alpha + T) / (r + x)."""
    return (m.alpha + big_t) / (m.r + x)
