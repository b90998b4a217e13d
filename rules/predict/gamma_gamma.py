"""The Gamma-Gamma model of spend (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
curves for customer base analysis"; the note "The Gamma-Gamma model of monetary value"): a
client's purchases are worth z ~ Gamma(p, nu) each, with nu ~ Gamma(q, v) across clients,
independent of how often they buy.

Input per client: ``n`` purchases (here: purchase days) and their mean value (here: net
revenue per purchase day, in minor units, so ``v`` is in minor units too). The fit is by
maximum likelihood over grouped rows ``(n, mean, weight)``, like :mod:`rules.predict.bgnbd`;
None when fewer than :data:`MIN_SPENDERS` clients have a positive mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from rules.predict.bgnbd import maximum_likelihood

MIN_SPENDERS = 10


@dataclass(frozen=True, slots=True)
class SpendModel:
    p: float
    q: float
    v: float


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def fit_spend(rows: Sequence[tuple[int, float, int]]) -> SpendModel | None:
    """Maximum likelihood over ``(n, mean, weight)`` rows with n >= 1 and mean > 0 (others
    are ignored); None when the data cannot support a fit."""
    arr = np.array([r for r in rows if r[0] >= 1 and r[1] > 0], dtype=float).reshape(-1, 3)
    n, mean, w = arr[:, 0], arr[:, 1], arr[:, 2]
    total = float(w.sum())
    if total < MIN_SPENDERS:
        return None
    log_mean, log_n = np.log(mean), np.log(n)

    def objective(params: np.ndarray) -> float:
        if np.any(np.abs(params) > 30):
            return 1e300
        p, q, v = np.exp(params)
        px = p * n
        ll = (gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(v)
              + (px - 1) * log_mean + px * log_n - (px + q) * np.log(n * mean + v))
        value = -float(np.dot(w, ll)) / total
        return value if math.isfinite(value) else 1e300

    start = np.array([0.0, 0.0, math.log(float(np.dot(w, mean)) / total)])
    best = maximum_likelihood(objective, start)
    if best is None:
        return None
    p, q, v = (float(x) for x in np.exp(best))
    if not all(math.isfinite(x) and x > 0 for x in (p, q, v)):
        return None
    return SpendModel(_round(p), _round(q), _round(v))


def expected_spend(s: SpendModel, n: int, mean_value: float) -> float:
    """E[value of a purchase | n purchases of mean ``mean_value``]: a weighted average of the
    population mean p v / (q - 1) and the client's own mean. With q <= 1 the population mean
    is infinite: the client's own mean is returned."""
    if s.q <= 1:
        return mean_value
    weight = s.p * n / (s.p * n + s.q - 1)
    return (1 - weight) * s.p * s.v / (s.q - 1) + weight * mean_value
