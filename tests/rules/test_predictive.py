"""The predictive metrics in the engine: p_alive and friends from a snapshot's fitted models,
the churn_risk preset's transitions at their exact instants, neutral values, and the
models' population aggregate. Expected values are computed here from the closed forms
written out independently (Fader, Hardie & Lee 2005, eq. (11); Batislam et al. 2007 for
the modified model), never with the code under test."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_testkit import DAY, feed, rcpt

from rules import Engine, load_ruleset
from rules.calendar import BusinessCalendar, iso
from rules.population import Snapshot
from rules.predict import snapshot as predict

# the paper's CDNOW parameters, per day (alpha = 4.414 per week * 7)
R, ALPHA, A, B = 0.243, 30.898, 0.793, 2.426
DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def models(used: str = predict.USED, fitted: bool = True) -> dict[str, Any]:
    params = {"r": R, "alpha": ALPHA, "a": A, "b": B, "time_unit": "day"} if fitted else None
    return {"used": used, "time_unit": "day", "clients": 1000, "groups": 10,
            "bgnbd": params, "mbgnbd": params, "gamma_gamma": None}


def p_alive_by_hand(x: int, t_x: int, big_t: int, variant: str = predict.USED) -> float:
    ratio = ((ALPHA + big_t) / (ALPHA + t_x)) ** (R + x)
    if variant == "bgnbd":
        return 1.0 if x == 0 else 1.0 / (1.0 + A / (B + x - 1) * ratio)
    return 1.0 / (1.0 + A / (B + x) * ratio)


def segment_by_hand(p: float) -> str:
    return "low" if p >= 0.67 else "medium" if p >= 0.34 else "high"


def client(days: list[int], cid: str = "c-1") -> list[Any]:
    return [rcpt(f"{cid}-r{i}", DAY0 + d * DAY + 12 * 3600, "100.00", client=cid)
            for i, d in enumerate(sorted(days))]


def churn_engine(snapshot_day: int, values: dict[str, Any] | None = None) -> Engine:
    eng = Engine([load_ruleset("churn_risk")], tz="UTC")
    eng.set_population(Snapshot(DAY0 + snapshot_day * DAY, {"predictive": values or models()}, 1000))
    return eng


def test_p_alive_and_the_transitions_at_their_instants() -> None:
    days = [0, 10, 20]  # x = 2, t_x = 20
    eng = churn_engine(21)
    state, events = feed(eng, client(days))
    assert events == []  # the dimension reads the population: nothing before the snapshot
    events = eng.advance(state, DAY0 + 3000 * DAY)
    got = [(e["time"], e["data"]["to"], e["data"]["cause"]) for e in events]
    expected: list[tuple[str, str, str]] = []
    current = None
    cal = BusinessCalendar("UTC")
    for d in range(21, 3000):
        seg = segment_by_hand(p_alive_by_hand(2, 20, d))
        if seg != current:
            instant = cal.day_start(cal.day(DAY0) + d)
            expected.append((iso(instant), seg, "population" if current is None else "time"))
            current = seg
    assert got == expected
    assert len(expected) == 3  # low at the snapshot, then medium, then high
    first = events[0]["data"]["metrics"]
    assert first["p_alive"] == pytest.approx(p_alive_by_hand(2, 20, 21), rel=1e-9)
    assert set(first) >= {"p_alive", "expected_purchases_90d", "predicted_clv_12m",
                          "expected_days_to_next_purchase"}


def test_a_one_time_buyer() -> None:
    eng = churn_engine(5)
    state, _ = feed(eng, client([0]))
    events = eng.advance(state, DAY0 + 4000 * DAY)
    p = [e["data"]["metrics"]["p_alive"] for e in events]
    assert p[0] == pytest.approx(p_alive_by_hand(0, 0, 5), rel=1e-9)
    if predict.USED == "bgnbd":  # BG/NBD: a one-time buyer never drops out
        assert [e["data"]["to"] for e in events] == ["low"]
    else:  # the modified model lets them drop out after the first purchase, slowly
        assert p_alive_by_hand(0, 0, 4000) < p[0]
        assert state.segments["churn_risk"][0] == segment_by_hand(p_alive_by_hand(0, 0, 4000)) == "medium"


def test_a_purchase_brings_the_client_back() -> None:
    eng = churn_engine(21)
    state, _ = feed(eng, client([0, 10, 20]))
    eng.advance(state, DAY0 + 400 * DAY)
    assert state.segments["churn_risk"][0] == "high"
    back = rcpt("c-1-back", DAY0 + 401 * DAY + 12 * 3600, "100.00", client="c-1")
    res = eng.receipt(state, back)
    assert [e["data"]["to"] for e in res.events] == ["low"]


def test_neutral_values_without_a_fitted_model() -> None:
    eng = churn_engine(21, models(fitted=False))
    state, _ = feed(eng, client([0, 10, 20]))
    events = eng.advance(state, DAY0 + 3000 * DAY)
    assert [e["data"]["to"] for e in events] == ["low"]
    m = events[0]["data"]["metrics"]
    assert (m["p_alive"], m["expected_purchases_90d"], m["predicted_clv_12m"],
            m["expected_days_to_next_purchase"]) == (1.0, 0.0, "0.00", -1.0)
    assert eng.next_due(state) is None


def test_next_due_equals_a_day_by_day_scan() -> None:
    rnd = random.Random(7)
    cal = BusinessCalendar("UTC")
    for n in range(40):
        first = rnd.randrange(0, 30)
        days = sorted({first, *(first + rnd.randrange(0, 200) for _ in range(rnd.randrange(0, 8)))})
        snap = days[-1] + rnd.randrange(1, 60)
        eng = churn_engine(snap)
        state, _ = feed(eng, client(days, f"c-{n}"))
        eng.advance(state, DAY0 + snap * DAY)
        x, t_x = len(days) - 1, days[-1] - days[0]
        now = segment_by_hand(p_alive_by_hand(x, t_x, snap - days[0]))
        assert state.segments["churn_risk"][0] == now
        scan = next((d for d in range(snap + 1, snap + 20_000)
                     if segment_by_hand(p_alive_by_hand(x, t_x, d - days[0])) != now), None)
        due = eng.next_due(state)
        assert due == (None if scan is None else cal.day_start(cal.day(DAY0) + scan)), (days, snap)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300), st.integers(0, 400),
                          st.integers(-5000, 10**7)), min_size=1, max_size=60),
       st.integers(1, 5), st.randoms())
def test_the_models_aggregate_merges_in_any_order(rows: list[tuple[int, int, int, int]], parts: int,
                                                  rnd: random.Random) -> None:
    one = predict.initialize()
    shards = [predict.initialize() for _ in range(parts)]
    for x, t_x, extra, revenue in rows:
        x, t_x = min(x, t_x), t_x
        inputs = (x, t_x, t_x + extra, x + 1, revenue // (x + 1))
        predict.update(one, inputs)
        predict.update(shards[rnd.randrange(parts)], inputs)
    rnd.shuffle(shards)
    merged = shards[0]
    for other in shards[1:]:
        merged = predict.merge(other, merged) if rnd.random() < 0.5 else predict.merge(merged, other)
    assert merged == one


def test_client_inputs_from_purchase_days() -> None:
    # purchase days 100, 103 and 110 (bit i: day 98 + i), snapshot day 130, revenue 301
    bits = (1 << 2) | (1 << 5) | (1 << 12)
    assert predict.client_inputs(bits, 98, 130, 301) == (2, 10, 30, 3, 100)
    assert predict.client_inputs(0, 0, 130, 0) is None


def test_the_client_summary_shows_the_predictions() -> None:
    # what the projection stores for GET /clients/{id} and the POS lookup (Engine.metrics)
    eng = churn_engine(21)
    state, _ = feed(eng, client([0, 10, 20]))
    eng.advance(state, DAY0 + 30 * DAY)
    shown = eng.metrics(state, DAY0 + 30 * DAY)
    assert shown["p_alive"] == pytest.approx(p_alive_by_hand(2, 20, 30), rel=1e-9)
    assert shown["expected_days_to_next_purchase"] == pytest.approx((ALPHA + 30) / (R + 2), rel=1e-5)
    assert shown["expected_purchases_90d"] > 0 and float(shown["predicted_clv_12m"]) > 0
