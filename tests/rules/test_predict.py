"""The numerical core of the predictive models (:mod:`rules.predict.bgnbd`,
:mod:`rules.predict.gamma_gamma`): closed forms against arithmetic written out here, the
published fits on CDNOW (Fader, Hardie & Lee 2005; the Gamma-Gamma note), agreement with
the independent ``lifetimes`` package (test-only dependency), monotonicity in T, no fit (and
no error) on too little data, and the fit times (printed, run with -s to see them)."""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.predict import (
    MIN_CLIENTS,
    MIN_REPEATERS,
    MIN_SPENDERS,
    PurchaseModel,
    SpendModel,
    clv,
    days_to_next_purchase,
    expected_purchases,
    expected_spend,
    fit,
    fit_spend,
    log_likelihood,
    p_alive,
    spend_log_likelihood,
)

# the paper's CDNOW parameters, per day (alpha = 4.414 per week * 7)
R, ALPHA, A, B = 0.243, 30.898, 0.793, 2.426
BG, MBG = PurchaseModel("bgnbd", R, ALPHA, A, B), PurchaseModel("mbgnbd", R, ALPHA, A, B)


def hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    """Gauss's hypergeometric series, summed term by term (|z| < 1)."""
    total, term, k = 1.0, 1.0, 0
    while abs(term) > 1e-18 * abs(total):
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        k += 1
    return total


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------- closed forms, by hand

def test_p_alive_by_hand() -> None:
    assert p_alive(BG, 0, 0, 0) == 1.0 and p_alive(BG, 0, 0, 365) == 1.0  # BG/NBD: x = 0 is alive
    # BG/NBD, x = 2, t_x = 30, T = 90
    odds = A / (B + 2 - 1) * math.pow((ALPHA + 90) / (ALPHA + 30), R + 2)
    assert rel(p_alive(BG, 2, 30, 90), 1 / (1 + odds)) < 1e-14
    # MBG/NBD, x = 0, T = 50: 1 / (1 + a/b ((alpha+T)/alpha)^r)
    odds = A / B * math.pow((ALPHA + 50) / ALPHA, R)
    assert rel(p_alive(MBG, 0, 0, 50), 1 / (1 + odds)) < 1e-14
    assert rel(p_alive(MBG, 0, 0, 0), 1 / (1 + A / B)) < 1e-14  # dropout possible at once
    # MBG/NBD, x = 3, t_x = 40, T = 200
    odds = A / (B + 3) * math.pow((ALPHA + 200) / (ALPHA + 40), R + 3)
    assert rel(p_alive(MBG, 3, 40, 200), 1 / (1 + odds)) < 1e-14


def test_p_alive_does_not_overflow() -> None:
    m = PurchaseModel("bgnbd", 2.0, 1.0, 1.0, 1.0)
    assert p_alive(m, 500, 1, 10_000) == 0.0  # ((1+10000)/(1+1))^502: e^4300, as a probability 0
    assert p_alive(PurchaseModel("mbgnbd", 2.0, 1.0, 1.0, 1.0), 0, 0, 1e300) < 1e-300


def test_expected_purchases_by_hand() -> None:
    t, big_t = 90.0, 60.0
    z = t / (ALPHA + big_t + t)
    shrink = math.pow((ALPHA + big_t) / (ALPHA + big_t + t), R)
    # BG/NBD, x = 0 (alive for sure): eq. (10) with x = 0
    bg0 = (A + B - 1) / (A - 1) * (1 - shrink * hyp2f1_series(R, B, A + B - 1, z))
    assert rel(expected_purchases(BG, t, 0, 0, big_t), bg0) < 1e-10
    # MBG/NBD, x = 0: (a+b)/(a-1) (1 - ... 2F1(r, b+1; a+b; z)) / (1 + a/b ((alpha+T)/alpha)^r)
    mbg0 = ((A + B) / (A - 1) * (1 - shrink * hyp2f1_series(R, B + 1, A + B, z))
            / (1 + A / B * math.pow((ALPHA + big_t) / ALPHA, R)))
    assert rel(expected_purchases(MBG, t, 0, 0, big_t), mbg0) < 1e-10
    # x = 4, t_x = 50, T = 120, t = 365
    x, t_x, big_t, t = 4, 50.0, 120.0, 365.0
    z = t / (ALPHA + big_t + t)
    shrink = math.pow((ALPHA + big_t) / (ALPHA + big_t + t), R + x)
    ratio = math.pow((ALPHA + big_t) / (ALPHA + t_x), R + x)
    bg = ((A + B + x - 1) / (A - 1) * (1 - shrink * hyp2f1_series(R + x, B + x, A + B + x - 1, z))
          / (1 + A / (B + x - 1) * ratio))
    mbg = ((A + B + x) / (A - 1) * (1 - shrink * hyp2f1_series(R + x, B + x + 1, A + B + x, z))
           / (1 + A / (B + x) * ratio))
    assert rel(expected_purchases(BG, t, x, t_x, big_t), bg) < 1e-10
    assert rel(expected_purchases(MBG, t, x, t_x, big_t), mbg) < 1e-10
    assert expected_purchases(BG, 0, x, t_x, big_t) == 0.0


def test_expected_purchases_limits() -> None:
    """Short horizon: P(alive) E[lambda] t; long horizon (a > 1): P(alive) E[1/p], the
    purchases expected before dropping out (z close to 1, the guarded hypergeometric)."""
    for m in (BG, MBG):
        short = expected_purchases(m, 1e-4, 3, 40, 100)
        assert rel(short, p_alive(m, 3, 40, 100) * (R + 3) / (ALPHA + 100) * 1e-4) < 1e-3
    for variant, extra in (("bgnbd", 0), ("mbgnbd", 1)):
        m = PurchaseModel(variant, 0.3, 0.05, 2.5, 2.0)
        for t in (1e9, 1e12, 1e300):
            value = expected_purchases(m, t, 5, 10, 20)
            assert math.isfinite(value)
            limit = p_alive(m, 5, 10, 20) * (2.5 + 2.0 + 5 + extra - 1) / (2.5 - 1)
            assert value <= limit * (1 + 1e-9) and (t < 1e12 or rel(value, limit) < 1e-6)


def test_expected_purchases_is_finite_and_continuous_at_a_1() -> None:
    """a = 1 is a removable singularity of eq. (10) (computed numerically there)."""
    for variant in ("bgnbd", "mbgnbd"):
        values = [expected_purchases(PurchaseModel(variant, 0.3, 20.0, a, 2.0), 365, 2, 30, 100)
                  for a in (1 - 1e-5, 1.0, 1 + 1e-5)]
        assert all(math.isfinite(v) for v in values)
        assert rel(values[1], (values[0] + values[2]) / 2) < 1e-6


@pytest.mark.parametrize(("m", "x", "t_x", "big_t", "t"), [
    # the box's bounds (a fit with no heterogeneity), x > T, t far beyond T, tiny a
    (PurchaseModel("bgnbd", 22026.5, 225349.0, 3.05902e-07, 1319.26), 5, 50, 100, 90),
    (PurchaseModel("mbgnbd", 0.0118359, 1.59604, 22026.5, 1.83473e-05), 1, 10, 100, 365),
    (PurchaseModel("bgnbd", 408.266, 0.398109, 2.12793, 41.514), 10, 0, 0, 90),
    (PurchaseModel("mbgnbd", 2.29734, 18.9536, 0.0597883, 2.74969), 200, 90, 100, 3650),
    (PurchaseModel("bgnbd", 5.0, 1.0, 0.5, 1.0), 3000, 3000, 3000, 365),
])
def test_expected_purchases_extreme_inputs_stay_finite_and_bounded(m: PurchaseModel, x: int, t_x: float,
                                                                   big_t: float, t: float) -> None:
    value = expected_purchases(m, t, x, t_x, big_t)
    assert math.isfinite(value) and 0 <= value <= p_alive(m, x, t_x, big_t) * (m.r + x) / (m.alpha + big_t) * t


def test_days_to_next_purchase_by_hand() -> None:
    assert rel(days_to_next_purchase(BG, 3, 100), (ALPHA + 100) / (R + 3)) < 1e-15
    assert rel(days_to_next_purchase(MBG, 0, 0), ALPHA / R) < 1e-15


def test_spend_by_hand() -> None:
    s = SpendModel(6.25, 3.74, 15.44)
    population = 6.25 * 15.44 / (3.74 - 1)
    assert rel(expected_spend(s, 0, 0.0), population) < 1e-15
    own = 6.25 * 4 / (6.25 * 4 + 3.74 - 1)
    assert rel(expected_spend(s, 4, 30.0), (1 - own) * population + own * 30.0) < 1e-14
    assert expected_spend(SpendModel(2.0, 0.9, 10.0), 3, 42.0) == 42.0  # q <= 1: the client's mean
    want = expected_purchases(BG, 365, 2, 30, 90) * expected_spend(s, 3, 25.0)
    assert rel(clv(BG, s, 2, 30, 90, 3, 25.0), want) < 1e-15
    assert rel(clv(MBG, s, 2, 30, 90, 3, 25.0, days=90),
               expected_purchases(MBG, 90, 2, 30, 90) * expected_spend(s, 3, 25.0)) < 1e-15


# ---------------------------------------------------------------- CDNOW: the published fits

@pytest.fixture(scope="module")
def cdnow() -> list[tuple[int, float, float, int]]:
    """The paper's 2,357 customers: (x, t_x, T) in weeks, one row each."""
    datasets = pytest.importorskip("lifetimes.datasets")
    df = datasets.load_cdnow_summary()
    return [(int(f), float(r), float(t), 1) for f, r, t in zip(df["frequency"], df["recency"], df["T"], strict=True)]


def test_bgnbd_fit_reproduces_the_paper(cdnow: list[tuple[int, float, float, int]]) -> None:
    started = time.perf_counter()
    m = fit(cdnow, "bgnbd")
    elapsed = time.perf_counter() - started
    assert m is not None
    for got, paper in ((m.r, 0.243), (m.alpha, 4.414), (m.a, 0.793), (m.b, 2.426)):
        assert rel(got, paper) < 0.01, (m, paper)
    assert all(float(f"{v:.6g}") == v for v in (m.r, m.alpha, m.a, m.b))  # rounded
    ll = log_likelihood(m, cdnow)
    assert abs(ll - -9582.4) < 0.1  # the paper's LL
    # per day: the same fit, alpha * 7
    days = [(x, t_x * 7, t * 7, w) for x, t_x, t, w in cdnow]
    d = fit(days, "bgnbd")
    assert d is not None and rel(d.alpha, 4.414 * 7) < 0.01 and abs(d.alpha / 7 - m.alpha) < 1e-4
    assert (d.r, d.a, d.b) == pytest.approx((m.r, m.a, m.b), rel=1e-5)
    purchases = sum(x for x, *_ in cdnow)  # each repeat purchase time's density: per day = per week / 7
    assert log_likelihood(d, days) == pytest.approx(ll - purchases * math.log(7), abs=1e-3)
    print(f"\nBG/NBD CDNOW (2,357 rows): {m} LL {ll:.4f}, per day {d}; fit {elapsed * 1000:.1f} ms")


def test_fits_agree_with_lifetimes(cdnow: list[tuple[int, float, float, int]]) -> None:
    lifetimes = pytest.importorskip("lifetimes")
    data = pytest.importorskip("lifetimes.datasets").load_cdnow_summary()
    for variant, fitter in (("bgnbd", lifetimes.BetaGeoFitter), ("mbgnbd", lifetimes.ModifiedBetaGeoFitter)):
        started = time.perf_counter()
        m = fit(cdnow, variant)
        elapsed = time.perf_counter() - started
        theirs = fitter().fit(data["frequency"], data["recency"], data["T"]).params_
        assert m is not None
        assert (m.r, m.alpha, m.a, m.b) == pytest.approx(
            (theirs["r"], theirs["alpha"], theirs["a"], theirs["b"]), rel=1e-4)
        print(f"\n{variant} CDNOW: {m} LL {log_likelihood(m, cdnow):.4f}; fit {elapsed * 1000:.1f} ms")


def test_grouped_rows_fit_like_single_rows(cdnow: list[tuple[int, float, float, int]]) -> None:
    grouped = sorted(Counter((x, t_x, t) for x, t_x, t, _ in cdnow).items())
    rows = [(x, t_x, t, w) for (x, t_x, t), w in grouped]
    assert len(rows) < len(cdnow)
    for variant in ("bgnbd", "mbgnbd"):
        a, b = fit(rows, variant), fit(cdnow, variant)
        assert a is not None and b is not None
        assert (a.r, a.alpha, a.a, a.b) == pytest.approx((b.r, b.alpha, b.a, b.b), rel=1e-5)
        assert fit(rows, variant) == a  # deterministic


def test_gamma_gamma_fit_reproduces_the_note() -> None:
    datasets = pytest.importorskip("lifetimes.datasets")
    df = datasets.load_cdnow_summary_data_with_monetary_value()
    df = df[df["frequency"] > 0]
    rows = [(int(n), float(v), 1) for n, v in zip(df["frequency"], df["monetary_value"], strict=True)]
    started = time.perf_counter()
    s = fit_spend(rows)
    elapsed = time.perf_counter() - started
    assert s is not None and len(rows) == 946
    # lifetimes' documentation: p 6.25, q 3.74, v 15.45 (Fader & Hardie's note: 15.44)
    for got, published in ((s.p, 6.25), (s.q, 3.74), (s.v, 15.45)):
        assert rel(got, published) < 0.01, s
    assert fit_spend(rows) == s
    print(f"\nGamma-Gamma CDNOW (946 rows): {s} LL {spend_log_likelihood(s, rows):.4f}; "
          f"fit {elapsed * 1000:.1f} ms")


# ---------------------------------------------------------------- lifetimes' closed forms

GRID = [(x, t_x, big_t) for big_t in (0.0, 1.0, 7.5, 39.0, 90.0, 400.0) for x in (0, 1, 2, 5, 20)
        for t_x in (0.0, big_t / 3, big_t) if x <= big_t and (x > 0) == (t_x > 0)]


@pytest.mark.parametrize("variant", ["bgnbd", "mbgnbd"])
@pytest.mark.parametrize("params", [(R, ALPHA, A, B), (0.524838, 6.18299, 0.891356, 1.614), (1.7, 12.0, 3.5, 0.6)])
def test_closed_forms_agree_with_lifetimes(variant: str, params: tuple[float, float, float, float]) -> None:
    lifetimes = pytest.importorskip("lifetimes")
    pd = pytest.importorskip("pandas")
    fitter: Any = (lifetimes.BetaGeoFitter if variant == "bgnbd" else lifetimes.ModifiedBetaGeoFitter)()
    fitter.params_ = pd.Series(dict(zip(("r", "alpha", "a", "b"), params, strict=True)))
    m = PurchaseModel(variant, *params)
    x, t_x, big_t = (np.array(col, dtype=float) for col in zip(*GRID, strict=True))
    alive = np.asarray(fitter.conditional_probability_alive(x, t_x, big_t), dtype=float)
    for i, (xi, txi, ti) in enumerate(GRID):
        assert p_alive(m, xi, txi, ti) == pytest.approx(alive[i], rel=1e-12)
    for t in (1.0, 30.0, 90.0, 365.0):
        theirs = np.asarray(fitter.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, big_t))
        for i, (xi, txi, ti) in enumerate(GRID):
            assert expected_purchases(m, t, xi, txi, ti) == pytest.approx(float(theirs[i]), rel=1e-9)


# ---------------------------------------------------------------- monotone in T

models = st.builds(PurchaseModel, st.sampled_from(["bgnbd", "mbgnbd"]),
                   st.floats(0.01, 50), st.floats(0.1, 5000), st.floats(0.01, 20), st.floats(0.01, 200))


@settings(max_examples=300, deadline=None)
@given(m=models, x=st.integers(0, 300), gap=st.floats(0, 2000), t_x=st.floats(0, 2000),
       dt=st.floats(1e-3, 2000), t=st.sampled_from([1.0, 30.0, 90.0, 365.0]))
def test_monotone_in_big_t(m: PurchaseModel, x: int, gap: float, t_x: float, dt: float, t: float) -> None:
    t_x = 0.0 if x == 0 else max(t_x, float(x))
    t1 = t_x + gap
    t2 = t1 + dt
    assert p_alive(m, x, t_x, t2) <= p_alive(m, x, t_x, t1)
    e1, e2 = expected_purchases(m, t, x, t_x, t1), expected_purchases(m, t, x, t_x, t2)
    assert math.isfinite(e1) and e2 <= e1 * (1 + 1e-9) + 1e-300
    assert days_to_next_purchase(m, x, t2) > days_to_next_purchase(m, x, t1)


@pytest.mark.parametrize("m", [BG, MBG])
def test_monotone_in_big_t_on_a_grid(m: PurchaseModel) -> None:
    for x, t_x in ((0, 0.0), (1, 3.0), (4, 60.0), (30, 200.0)):
        days = [t_x + d for d in range(0, 1500, 7)]
        alive = [p_alive(m, x, t_x, d) for d in days]
        purchases = [expected_purchases(m, 90, x, t_x, d) for d in days]
        wait = [days_to_next_purchase(m, x, d) for d in days]
        assert all(b <= a for a, b in itertools.pairwise(alive))
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(purchases))
        assert all(b > a for a, b in itertools.pairwise(wait))
        assert purchases[-1] < purchases[0] and ((x == 0 and m.variant == "bgnbd") or alive[-1] < alive[0])


# ---------------------------------------------------------------- too little data: None

def test_no_fit_on_too_little_data() -> None:
    enough = [(0, 0.0, 100.0, MIN_CLIENTS - MIN_REPEATERS), (2, 30.0, 100.0, MIN_REPEATERS)]
    assert fit(enough) is not None and fit(enough, "mbgnbd") is not None
    assert fit([(0, 0.0, 100.0, MIN_CLIENTS - MIN_REPEATERS - 1), (2, 30.0, 100.0, MIN_REPEATERS)]) is None
    assert fit([(0, 0.0, 100.0, 1000), (2, 30.0, 100.0, MIN_REPEATERS - 1)]) is None
    assert fit([(0, 0.0, 0.0, 1000), (0, 0.0, 0.0, 50)], "mbgnbd") is None  # every T == 0
    assert fit([]) is None and fit_spend([]) is None
    # rows off the contract are skipped, not an error
    assert fit([(3, 50.0, 10.0, 500), (-1, 0.0, 5.0, 500), (0, 3.0, 5.0, 500), (2, math.nan, 9.0, 500),
                (1, 1.0, 2.0, 0)]) is None
    assert fit_spend([(2, 10.0, MIN_SPENDERS - 1), (0, 5.0, 100), (3, 0.0, 100), (3, -2.0, 100)]) is None
    with pytest.raises(ValueError, match="unknown purchase model"):
        fit(enough, "pareto")


purchase_rows = st.lists(st.tuples(st.integers(0, 40), st.floats(0, 1), st.integers(0, 400), st.integers(1, 60))
                         .map(lambda r: (r[0], 0.0 if r[0] == 0 else float(max(r[0], round(r[1] * r[2]))),
                                         float(max(r[2], r[0])), r[3])), max_size=12)


@settings(max_examples=25, deadline=None)
@given(rows=purchase_rows, spend=st.lists(st.tuples(st.integers(0, 10), st.floats(-5, 500), st.integers(0, 30)),
                                          max_size=12))
def test_fits_never_raise(rows: list[tuple[int, float, float, int]], spend: list[tuple[int, float, int]]) -> None:
    for variant in ("bgnbd", "mbgnbd"):
        m = fit(rows, variant)
        assert m is None or all(math.isfinite(v) and v > 0 for v in (m.r, m.alpha, m.a, m.b))
        if m is not None:
            for x, t_x, big_t, _ in rows:
                assert 0 <= p_alive(m, x, t_x, big_t) <= 1
                assert math.isfinite(expected_purchases(m, 365, x, t_x, big_t))
    s = fit_spend(spend)
    assert s is None or all(math.isfinite(v) and v > 0 for v in (s.p, s.q, s.v))


# ---------------------------------------------------------------- synthetic data, fit time

def simulate(n: int, variant: str, seed: int,
             params: tuple[float, float, float, float]) -> list[tuple[int, float, float, int]]:
    """Clients of the model, per day, grouped: lambda ~ Gamma(r, alpha), p ~ Beta(a, b),
    first purchase 1..1500 days ago; c purchases in (0, T] (Poisson); dropout after repeat
    purchase k ~ Geometric(p) (MBG/NBD: also at the first, k >= 0); x = min(c, k) and t_x the
    x-th of c uniform times (a Beta order statistic), in whole days."""
    r, alpha, a, b = params
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    big_t = rng.integers(1, 1500, n).astype(float)
    c = rng.poisson(lam * big_t)
    k = rng.geometric(p) - (1 if variant == "mbgnbd" else 0)
    x = np.minimum(c, k)
    t_x = np.where(x > 0, np.floor(big_t * rng.beta(np.maximum(x, 1), c - x + 1)), 0.0)
    x = np.minimum(x, t_x)  # x purchase *days*: at most one a day
    groups = Counter(zip(x.tolist(), t_x.tolist(), big_t.tolist(), strict=True))
    return [(int(xi), ti, bi, w) for (xi, ti, bi), w in sorted(groups.items())]


@pytest.mark.parametrize(("variant", "clients"), [("bgnbd", 62_000), ("mbgnbd", 79_000)])
def test_synthetic_fit_recovers_the_parameters(variant: str, clients: int) -> None:
    """~50,000 grouped rows; the fit time is printed."""
    truth = (0.5, 20.0, 0.8, 3.0)
    rows = simulate(clients, variant, 7, truth)
    assert 45_000 < len(rows) < 55_000
    started = time.perf_counter()
    m = fit(rows, variant)
    elapsed = time.perf_counter() - started
    assert m is not None
    print(f"\n{variant} synthetic, {len(rows)} grouped rows ({clients} clients): {m}; fit {elapsed:.3f} s")
    for got, want in zip((m.r, m.alpha, m.a, m.b), truth, strict=True):
        assert rel(got, want) < 0.15, (m, truth)
