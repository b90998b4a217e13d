"""Purchase models of the BG/NBD family, per day: the likelihood, its fit and the closed
forms per client.

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive, a client buys at a Poisson rate lambda ~ Gamma(r, alpha); after each *repeat*
  purchase they drop out with probability p ~ Beta(a, b). A one-time buyer cannot have
  dropped out: P(alive) = 1 whatever their silence.
* **MBG/NBD** (Batislam, Denizel & Filiztekin 2007): the same, but the client may also drop
  out right after the first purchase, so a one-time buyer's P(alive) falls with time too.

Per client: ``x`` repeat purchase days, ``t_x`` days from the first purchase day to the
last (0 when x = 0), ``T`` days from the first purchase day to now (t_x <= T).

**Monotone in T.** With x and t_x fixed (no new purchase), :func:`p_alive` and
:func:`expected_purchases` do not increase with T and :func:`days_to_next_purchase`
increases: :mod:`rules.metrics.predictive` relies on it to find the day a threshold is
crossed by bisection.

**Fit.** Maximum likelihood over grouped rows ``(x, t_x, T, weight)``: L-BFGS-B with the
analytic gradient, on the logarithms of the parameters, from a fixed start, within the box
``LOG_BOUNDS`` (Nelder-Mead then L-BFGS-B again when that does not converge). No
penalizer: when the likelihood's maximum lies at infinity (no heterogeneity to estimate, e.g.
every client buying at the same rate), the fit stops at the box, the finite limit of the
model. Same rows in the same order give bitwise the same result; the parameters are rounded
to 6 significant digits. :func:`fit` gives None, never an error, when the data cannot
support a fit: fewer than :data:`MIN_CLIENTS` clients, fewer than :data:`MIN_REPEATERS`
with a repeat purchase, every T = 0, or no convergence to finite values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1

Vector = NDArray[np.float64]
Objective = Callable[[Vector], tuple[float, Vector]]

MIN_CLIENTS = 100  # clients (total weight) a fit needs, at least
MIN_REPEATERS = 10  # of them with a repeat purchase (x > 0), at least
VARIANTS = ("bgnbd", "mbgnbd")
#: the box of the log-parameters (r, alpha, a, b). Up to e^10 (22026) for r, a and b: beyond,
#: the gamma and beta mixtures are as good as degenerate and the log-gamma differences of the
#: likelihood lose their precision. alpha's is wider, as alpha / r (the mean days between
#: purchases) stays finite when r goes to its bound.
LOG_BOUNDS = ((-15.0, 10.0), (-15.0, 25.0), (-15.0, 10.0), (-15.0, 10.0))
_HUGE = 1e300


@dataclass(frozen=True, slots=True)
class PurchaseModel:
    """Fitted parameters (time unit: day)."""

    variant: str  # "bgnbd" | "mbgnbd"
    r: float
    alpha: float
    a: float
    b: float


def wsum(w: Vector, values: Vector) -> float:
    """sum(w * values), in numpy's own (pairwise) order: no BLAS, whose threads may change
    the order of the sum and so the last bits."""
    return float(np.sum(w * values))


def round6(value: float) -> float:
    """``value`` rounded to 6 significant digits."""
    return float(f"{value:.6g}")


class _Rows:
    """Valid rows as arrays; the special functions of x are computed once per distinct x."""

    def __init__(self, rows: Sequence[tuple[int, float, float, int]]) -> None:
        arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
        x, t_x, big_t, w = arr.T
        ok = (np.isfinite(arr).all(axis=1) & (x >= 0) & (t_x >= 0) & (t_x <= big_t) & (w > 0)
              & ((x > 0) | (t_x == 0)))
        self.x, self.t_x, self.big_t, self.w = x[ok], t_x[ok], big_t[ok], w[ok]
        self.ux, self.ix = np.unique(self.x, return_inverse=True)
        self.total = float(self.w.sum())
        self.repeaters = float(self.w[self.x > 0].sum())


def _negloglik(theta: Vector, d: _Rows, variant: str) -> tuple[float, Vector]:
    """Minus the mean log-likelihood per client and its gradient in the log-parameters."""
    r, alpha, a, b = (float(v) for v in np.exp(theta))
    ux, ix = d.ux, d.ix
    if variant == "bgnbd":  # eq. (6): B(a, b+x)/B(a, b) ... + [x > 0] B(a+1, b+x-1)/B(a, b) ...
        ub, ud = b + ux, b + np.maximum(ux, 1.0) - 1.0
    else:  # MBG/NBD: B(a, b+x+1)/B(a, b) ... + B(a+1, b+x)/B(a, b) ..., for every x
        ub, ud = b + ux + 1.0, b + ux
    head = (gammaln(r + ux) - gammaln(r) + betaln(a, ub) - betaln(a, b))[ix] + r * math.log(alpha)
    rx = r + d.x
    log_t, log_tx = np.log(alpha + d.big_t), np.log(alpha + d.t_x)
    a3 = -rx * log_t
    a4 = math.log(a) - np.log(ud)[ix] - rx * log_tx
    if variant == "bgnbd":
        a4 = np.where(d.x > 0, a4, -np.inf)
    lse = np.logaddexp(a3, a4)
    s3, s4 = np.exp(a3 - lse), np.exp(a4 - lse)
    w = d.w / d.total
    value = -wsum(w, head + lse)
    dr = (digamma(r + ux) - digamma(r))[ix] + math.log(alpha) - s3 * log_t - s4 * log_tx
    dalpha = r / alpha - rx * (s3 / (alpha + d.big_t) + s4 / (alpha + d.t_x))
    da = (digamma(a + b) - digamma(a + ub))[ix] + s4 / a
    db = (digamma(ub) - digamma(a + ub))[ix] - digamma(b) + digamma(a + b) - s4 / ud[ix]
    grad = -np.array([r * wsum(w, dr), alpha * wsum(w, dalpha), a * wsum(w, da), b * wsum(w, db)])
    if not (math.isfinite(value) and np.isfinite(grad).all()):
        return _HUGE, np.zeros_like(theta)
    return value, grad


def log_likelihood(m: PurchaseModel, rows: Sequence[tuple[int, float, float, int]]) -> float:
    """The model's log-likelihood of the (valid) rows, summed over the clients."""
    d = _Rows(rows)
    if d.total == 0:
        return 0.0
    theta = np.log(np.array([m.r, m.alpha, m.a, m.b]))
    return -_negloglik(theta, d, m.variant)[0] * d.total


def fit(rows: Sequence[tuple[int, float, float, int]], variant: str = "bgnbd") -> PurchaseModel | None:
    """Maximum likelihood over ``(x, t_x, T, weight)`` rows (weight: clients with those
    inputs; rows off the contract, e.g. t_x > T or weight <= 0, are ignored); None when the
    data cannot support a fit (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown purchase model {variant!r}")
    d = _Rows(rows)
    if d.total < MIN_CLIENTS or d.repeaters < MIN_REPEATERS or not (d.big_t > 0).any():
        return None
    # start: r = 1, a = b = 1 and the population's mean purchase rate r / alpha
    rate = wsum(d.w, d.x) / max(wsum(d.w, d.big_t), 1.0)
    start = np.array([0.0, min(max(-math.log(rate), -10.0), 10.0), 0.0, 0.0])
    best = maximum_likelihood(lambda th: _negloglik(th, d, variant), start, LOG_BOUNDS)
    if best is None:
        return None
    r, alpha, a, b = (round6(float(v)) for v in np.exp(best))
    return PurchaseModel(variant, r, alpha, a, b)


def maximum_likelihood(objective: Objective, start: Vector,
                       bounds: Sequence[tuple[float, float]]) -> Vector | None:
    """The minimum of ``objective`` (value and gradient) within ``bounds``: L-BFGS-B from
    ``start``; if it does not converge, Nelder-Mead from ``start`` then L-BFGS-B from there.
    None when no finite, converged minimum is found."""
    options = {"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-10}
    found = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    if not _converged(objective, found.x, found.status, bounds):
        simplex = minimize(lambda th: objective(th)[0], start, method="Nelder-Mead", bounds=bounds,
                           options={"maxiter": 800, "xatol": 1e-8, "fatol": 1e-12})
        found = minimize(objective, simplex.x, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        if not _converged(objective, found.x, found.status, bounds):
            return None
    best: Vector = np.asarray(found.x, dtype=np.float64)
    return best


def _converged(objective: Objective, theta: Vector, status: int, bounds: Sequence[tuple[float, float]]) -> bool:
    """A finite minimum where L-BFGS-B stopped: converged, or stopped by a line search that
    cannot improve (at the precision of the floats) with a gradient ~0 off the box's faces."""
    value, grad = objective(theta)
    if not (math.isfinite(value) and value < _HUGE and np.isfinite(theta).all()):
        return False
    if status == 0:
        return True
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])
    free = ~(((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0)))
    return status == 2 and float(np.max(np.abs(grad[free]), initial=0.0)) < 1e-5


def _log_odds_dead(m: PurchaseModel, x: float, t_x: float, T: float) -> float:
    """log(P(dead) / P(alive)) given the history; -inf when alive for sure."""
    if m.variant == "bgnbd":
        if x == 0:
            return -math.inf
        log_odds = math.log(m.a) - math.log(m.b + x - 1)
    else:
        log_odds = math.log(m.a) - math.log(m.b + x)
    return log_odds + (m.r + x) * (math.log(m.alpha + T) - math.log(m.alpha + t_x))


def p_alive(m: PurchaseModel, x: int, t_x: float, T: float) -> float:
    """The probability that the client is still alive: BG/NBD 1 for x = 0, else
    1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) (Fader, Hardie & Lee 2005, eq. (11));
    MBG/NBD 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)) for every x. In log space (no
    overflow). Non-increasing in T."""
    z = _log_odds_dead(m, x, t_x, T)
    if z > 0:
        e = math.exp(-z)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(z))


def expected_purchases(m: PurchaseModel, t: float, x: int, t_x: float, T: float) -> float:
    """E[X(t) | x, t_x, T]: the purchase days expected in the next ``t`` days (BG/NBD eq.
    (10); the MBG/NBD counterpart, Batislam et al. 2007): P(alive) times the purchases of an
    alive client. Finite for any inputs; non-increasing in T."""
    if t <= 0:
        return 0.0
    return p_alive(m, x, t_x, T) * _alive_purchases(m, t, x, T)


def _alive_purchases(m: PurchaseModel, t: float, x: float, T: float) -> float:
    """E[X(t) | alive, x, T] = E[(1 - (1 + p u)^-s) / p] over p ~ Beta(a, B), with s = r+x,
    u = t/(alpha+T), B = b+x (BG/NBD) or b+x+1 (MBG/NBD): in closed form
    (a+B-1)/(a-1) (1 - (1+u)^-s 2F1(s, B; a+B-1; z)), z = t/(alpha+T+t) (eq. (10)'s
    numerator). The hypergeometric function is evaluated as written, else by Euler's
    transformation, (1+u)^(1-a) 2F1(c-s, a-1; c; z) for the product, else by Pfaff's,
    2F1(s, a-1; c; -u);
    each value must lie within the bounds 0 <= . <= s u (the alive purchases without
    dropout) and, for a > 1, <= E[1/p] = (a+B-1)/(a-1). When none does (z close to 1 with
    large parameters, or a ~ 1), the expectation is integrated numerically instead."""
    a, s = m.a, m.r + x
    big_b = m.b + x + (1.0 if m.variant == "mbgnbd" else 0.0)
    c = a + big_b - 1.0
    u = t / (m.alpha + T)
    high = s * u if a <= 1 else min(s * u, c / (a - 1.0))
    if abs(a - 1.0) > 1e-6:
        z = t / (m.alpha + T + t)
        log1pu = math.log1p(u)
        for hyp, log_factor in ((hyp2f1(s, big_b, c, z), -s * log1pu),
                                (hyp2f1(c - s, a - 1.0, c, z), (1.0 - a) * log1pu),
                                (hyp2f1(s, a - 1.0, c, -u), 0.0)):
            h = float(hyp)
            term = math.exp(math.log(h) + log_factor) if h > 0 else h * math.exp(log_factor)
            value = c / (a - 1.0) * (1.0 - term)
            if math.isfinite(value) and 0.0 <= value <= high * (1.0 + 1e-9):
                return value
    return min(_integrated(s, u, a, big_b), high)


def _integrated(s: float, u: float, a: float, big_b: float) -> float:
    """E[(1 - (1+pu)^-s) / p] over p ~ Beta(a, B) by the trapezoidal rule in y = logit(p):
    the integrand is analytic and decays exponentially at both ends, so the rule converges
    geometrically. The grid spans where the integrand is within e^-50 of its maximum (found
    on a coarse grid and at the density's mode), with a step resolving the mode's width;
    beyond |y| = 600 the tails are added in closed form."""
    log_beta = float(betaln(a, big_b))
    mode = math.log(a / big_b)
    coarse = np.append(np.linspace(-600.0, 600.0, 2401), mode)
    keep = coarse[_log_integrand(coarse, s, u, a, big_b) >= float(np.max(_log_integrand(
        np.array([mode, -math.log1p(s * u)]), s, u, a, big_b))) - 50.0]
    lo, hi = max(float(np.min(keep)) - 0.5, -600.0), min(float(np.max(keep)) + 0.5, 600.0)
    width = math.sqrt((a + big_b) / (a * big_b))  # of the density around its mode, in y
    step = min(0.25, width / 4.0, (hi - lo) / 64.0)
    y = np.linspace(lo, hi, min(int((hi - lo) / step) + 2, 200_000))
    value = float(np.sum(np.exp(_log_integrand(y, s, u, a, big_b) - log_beta))) * float(y[1] - y[0])
    if lo <= -600.0:  # below, p ~ e^y, (1-p)^B ~ 1 and the rest ~ s u
        value += s * u * math.exp(a * lo - log_beta) / a
    if hi >= 600.0:  # above, p ~ 1 and 1 - p ~ e^-y
        value += -math.expm1(-s * math.log1p(u)) * math.exp(-big_b * hi - log_beta) / big_b
    return value if math.isfinite(value) else s * u


def _log_integrand(y: Vector, s: float, u: float, a: float, big_b: float) -> Vector:
    """log of p^a (1-p)^B (1 - (1+pu)^-s) / p at p = 1 / (1 + e^-y), less log B(a, B)."""
    log_p, log_q = -np.logaddexp(0.0, -y), -np.logaddexp(0.0, y)
    p = np.exp(log_p)
    log_g = np.where(p * u > 1e-12, np.log(-np.expm1(-s * np.log1p(p * u)) / np.maximum(p, 1e-300)),
                     math.log(s * u) if s * u > 0 else -np.inf)
    out: Vector = a * log_p + big_b * log_q + log_g
    return out


def days_to_next_purchase(m: PurchaseModel, x: int, T: float) -> float:
    """The expected days until the next purchase day of a client who is still alive, as the
    inverse of their expected purchase rate: lambda | x, T ~ Gamma(r + x, alpha + T), so
    1 / E[lambda | x, T] = (alpha + T) / (r + x) (not E[1 / lambda], infinite for r + x <= 1).
    Increasing in T."""
    return (m.alpha + T) / (m.r + x)
