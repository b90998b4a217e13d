"""Population statistics and the presets that read them, against brute-force computations
of their definitions (plain Python here, never the code under test)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rules_testkit import DAY, changes, feed, rcpt, ts

from rules import Engine, RuleSetError, load_ruleset
from rules import population as pop
from rules.metrics import MetricView
from rules.ruleset import loads

# -- aggregates ------------------------------------------------------------------------------


def _part(values: list[int], exact: bool) -> dict[str, list[int]]:
    part: dict[str, list[int]] = {}
    for v in values:
        pop.add(part, v, exact)
    return part


def _nearest_rank(values: list[int], p: float) -> int:
    """The smallest v such that at least p% of the values are <= v."""
    ordered = sorted(values)
    return next(v for v in ordered if sum(1 for w in ordered if w <= v) * 100 >= p * len(ordered))


def _pareto(values: list[int], share: float) -> int | None:
    """Smallest positive v such that the values above v sum to under share% of the total."""
    positive = [v for v in values if v > 0]
    total = sum(positive)
    inside = [v for v in positive if sum(w for w in positive if w > v) * 100 < share * total]
    return min(inside) if inside else None


@given(st.lists(st.integers(-50, 400), min_size=1, max_size=80), st.integers(1, 6), st.randoms())
def test_merge_in_any_order_equals_one_pass(values: list[int], parts: int, rnd: random.Random) -> None:
    spec = pop.Spec({"p": pop.Stat("p", "percentile", "visits_12m", at=50),
                     "m": pop.Stat("m", "mean", "revenue_12m")})
    key_p, key_m = spec.part_of["p"], spec.part_of["m"]
    one = pop.initialize(spec)
    shards = [pop.initialize(spec) for _ in range(parts)]
    for v in values:
        for agg in (one, shards[rnd.randrange(parts)]):
            agg["clients"] += 1
            pop.add(agg[key_p], v, True)
            agg[key_m]["n"] += 1
            agg[key_m]["sum"] += v
    rnd.shuffle(shards)
    merged = shards[0]
    for other in shards[1:]:
        merged = pop.merge(spec, other, merged) if rnd.random() < 0.5 else pop.merge(spec, merged, other)
    assert merged == one


@given(st.lists(st.integers(-5, 400), min_size=1, max_size=120), st.integers(1, 100))
def test_percentile_of_integers_is_the_exact_nearest_rank(values: list[int], p: int) -> None:
    assert pop.percentile(_part(values, True), p) == _nearest_rank(values, p)


@given(st.lists(st.integers(-10**6, 10**9), min_size=1, max_size=120), st.integers(1, 100))
def test_percentile_of_money_is_at_most_one_band_above_the_exact_value(values: list[int], p: int) -> None:
    exact = _nearest_rank(values, p)
    got = pop.percentile(_part(values, False), p)
    assert got is not None
    a = pop.RELATIVE_ACCURACY
    assert got >= exact
    if exact > 0:
        assert got <= exact * (1 + a) / (1 - a) + 1
    elif exact < 0:
        assert got <= exact * (1 - a) / (1 + a) + 1
    else:
        assert got == 0
    assert got in values  # a real client's value, never an interpolation


@given(st.lists(st.integers(-20, 500), min_size=1, max_size=100), st.sampled_from([50, 80, 95, 100]))
def test_pareto_of_integers_is_exact(values: list[int], share: int) -> None:
    assert pop.pareto(_part(values, True), share) == _pareto(values, share)


def test_pareto_of_money_misclassifies_only_the_crossing_bucket() -> None:
    rnd = random.Random(7)
    values = [int(rnd.lognormvariate(8, 1.5)) for _ in range(5000)]
    exact, got = _pareto(values, 80), pop.pareto(_part(values, False), 80)
    assert exact is not None and got is not None
    assert pop.bucket(got, False) == pop.bucket(exact, False)
    wrong = sum(1 for v in values if (v >= exact) != (v >= got))
    assert wrong / len(values) < 0.01


def test_next_instant_for_each_cadence() -> None:
    from rules.calendar import BusinessCalendar

    cal = BusinessCalendar("Europe/Moscow")
    t = ts("2026-03-04T23:30:00+03:00")  # a Wednesday
    assert pop.next_instant(t, "day", cal) == ts("2026-03-05T00:00:00+03:00")
    assert pop.next_instant(t, "week", cal) == ts("2026-03-09T00:00:00+03:00")
    assert pop.next_instant(t, "month", cal) == ts("2026-04-01T00:00:00+03:00")
    assert pop.next_instant(ts("2026-03-05T00:00:00+03:00"), "day", cal) == ts("2026-03-06T00:00:00+03:00")


# -- rule sets -------------------------------------------------------------------------------

_RS = """
ruleset: t
params: {share: 80.0}
population:
  top: {pareto: revenue_12m, share: share}
dimensions:
  - id: d
    default: rest
    segments:
      - {id: top, when: "revenue_12m >= population.top"}
"""


def test_rules_read_declared_and_builtin_statistics() -> None:
    rs = loads(_RS)
    assert list(rs.population) == ["top"]
    assert rs.dimensions[0].population == ("top",)
    rs = loads(_RS.replace("population.top", "population.avg_check_12m"))
    assert list(rs.population) == ["avg_check_12m"]


@pytest.mark.parametrize(("text", "message"), [
    (_RS.replace("population.top", "population.nope"), "unknown population statistic 'nope'"),
    (_RS.replace("pareto: revenue_12m", "pareto: top_category"), "is not a number"),
    (_RS.replace("pareto: revenue_12m", "pareto: revenue_12"), "unknown metric"),
    (_RS.replace("share: share", "share: nope"), "'nope' is not a parameter"),
    (_RS.replace("share: share", "share: 180"), "must be in (0, 100]"),
    (_RS.replace("{pareto", "{median"), "needs exactly one of"),
    (_RS.replace("share: share}", "share: share, where: \"visitz >= 1\"}"), None),
])
def test_bad_declarations_are_rule_set_errors(text: str, message: str | None) -> None:
    if message is None:  # a bad 'where' is found when the engine builds its spec
        with pytest.raises(pop.PopulationError, match="unknown metric 'visitz'"):
            Engine([loads(text)])
        return
    with pytest.raises(RuleSetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        loads(text)


def test_two_rule_sets_may_not_define_one_statistic_differently() -> None:
    other = _RS.replace("ruleset: t", "ruleset: u").replace("id: d\n", "id: e\n").replace("80.0", "70.0")
    with pytest.raises(RuleSetError, match="defined differently"):
        Engine([loads(_RS), loads(other)])


# -- presets against brute force -------------------------------------------------------------


def _snapshot(eng: Engine, states: dict[str, Any], instant: int) -> pop.Snapshot:
    agg = pop.initialize(eng.spec)
    for s in states.values():
        pop.update(eng.spec, agg, MetricView(s, instant, eng.cal))
    snap = pop.snapshot(eng.spec, instant, agg)
    assert snap is not None
    return snap


def _population(seed: int, clients: int = 300) -> tuple[Engine, dict[str, Any], int, dict[str, list[tuple[int, int]]]]:
    """Random sales (UTC, whole cents), replayed in time order; (engine, states, as-of,
    client -> [(epoch s, cents)])."""
    rnd = random.Random(seed)
    start = ts("2025-01-01T00:00:00Z")
    sales: dict[str, list[tuple[int, int]]] = {}
    rows = []
    for c in range(clients):
        cid = f"c{c:04d}"
        n = rnd.choice([1, 1, 2, 3, 5, 8, 13, 30])
        for k in range(n):
            at = start + rnd.randrange(500) * DAY + rnd.randrange(DAY)
            cents = rnd.choice([500, 1000, 1999, rnd.randrange(100, 50_000)])
            sales.setdefault(cid, []).append((at, cents))
            rows.append((at, cid, k, cents))
    rows.sort()
    eng = Engine([load_ruleset("rfm_quantiles"), load_ruleset("abc")])
    states: dict[str, Any] = {}
    for at, cid, k, cents in rows:
        res = eng.receipt(states.get(cid), rcpt(f"{cid}-{k}", at, f"{cents // 100}.{cents % 100:02d}", client=cid))
        states[cid] = res.state
    as_of = start + 520 * DAY
    return eng, states, as_of, sales


def _months(at: int) -> int:
    d = datetime.fromtimestamp(at, UTC)
    return d.year * 12 + d.month - 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rfm_quantiles_and_abc_equal_their_definitions_at_the_snapshot(seed: int) -> None:
    eng, states, as_of, sales = _population(seed)
    eng.set_population(_snapshot(eng, states, as_of))
    for s in states.values():
        eng.advance(s, as_of)
    # brute force: metrics from the raw sales, UTC calendar
    now_month = _months(as_of)
    r, f, m = {}, {}, {}
    for cid, rows in sales.items():
        r[cid] = (as_of - max(at for at, _ in rows)) // DAY
        recent = [(at, c) for at, c in rows if now_month - 11 <= _months(at) <= now_month]
        f[cid], m[cid] = len(recent), sum(c for _, c in recent)
    scored = [cid for cid in sales if f[cid] >= 1]
    cuts = {name: [_nearest_rank([d[c] for c in scored], p) for p in (20, 40, 60, 80)]
            for name, d in (("r", r), ("f", f), ("m", m))}
    agree_m = 0
    for cid in sales:
        seg = eng.segments(states[cid])
        if f[cid] < 1:
            assert seg["rfm_quantiles_score"] == "000" and seg["rfm_quantiles"] == "inactive"
            continue
        score = seg["rfm_quantiles_score"]
        assert score[0] == str(1 + sum(1 for x in cuts["r"] if x > r[cid])), cid
        assert score[1] == str(1 + sum(1 for x in cuts["f"] if x < f[cid])), cid
        agree_m += score[2] == str(1 + sum(1 for x in cuts["m"] if x < m[cid]))
    assert agree_m >= 0.97 * len(scored)
    positive = [m[c] for c in sales if m[c] > 0]
    a_cut, b_cut = _pareto(positive, 80), _pareto(positive, 95)
    assert a_cut is not None and b_cut is not None

    def abc(v: int) -> str:
        return "none" if v <= 0 else "a" if v >= a_cut else "b" if v >= b_cut else "c"

    agree_abc = sum(eng.segments(states[c])["abc"] == abc(m[c]) for c in sales)
    assert agree_abc >= 0.97 * len(sales)


def test_population_dimensions_wait_for_the_first_snapshot_then_change_with_cause_population() -> None:
    eng = Engine([load_ruleset("abc"), load_ruleset("boostfeel")])
    s, ev = feed(eng, [rcpt("r1", "2026-03-01T10:00:00Z", "100.00")])
    assert {e["data"]["dimension"] for e in ev} == {"boostfeel"}
    other, _ = feed(eng, [rcpt("x1", "2026-03-01T11:00:00Z", "900.00", client="c2")])
    instant = ts("2026-03-02T00:00:00Z")
    eng.set_population(_snapshot(eng, {"c1": s, "c2": other}, instant))
    ev = eng.catch_up(s)
    assert [(e["data"]["dimension"], e["data"]["to"], e["data"]["cause"], e["time"]) for e in ev] == [
        ("abc", "b", "population", "2026-03-02T00:00:00Z")]  # 900 of 1000 before it: under 95%
    assert eng.catch_up(s) == []  # once per snapshot
    assert changes(eng.catch_up(other)) == [("2026-03-02T00:00:00Z", "a")]


def test_profsalon_vip_uses_the_salons_own_average_check() -> None:
    eng = Engine([load_ruleset("profsalon")])
    s, _ = feed(eng, [rcpt("jan", "2026-01-15T12:00:00Z", "3000.00"),
                      rcpt("feb", "2026-02-10T12:00:00Z", "3000.00"),
                      rcpt("mar", "2026-03-05T12:00:00Z", "3000.00")])
    assert eng.segments(s) == {}  # no snapshot yet: the dimension waits
    instant = ts("2026-03-06T00:00:00Z")
    eng.set_population(pop.Snapshot(instant, {"salon_avg_check": 1000.0}, 1))
    assert changes(eng.catch_up(s)) == [("2026-03-06T00:00:00Z", "vip")]  # 3000 >= 3 x 1000
    eng.set_population(pop.Snapshot(instant + DAY, {"salon_avg_check": 1000.01}, 1))
    assert changes(eng.catch_up(s)) == [("2026-03-07T00:00:00Z", "regular")]
    # the salon's average check of this one client: 9000 / 3
    snap = _snapshot(eng, {"c1": s}, instant + 2 * DAY)
    assert snap.values == {"salon_avg_check": 3000.0}
    fixed = Engine([load_ruleset("profsalon", {"salon_avg_check": 1000.0})])
    assert not fixed.spec.stats
    s2, _ = feed(fixed, [rcpt("jan", "2026-01-15T12:00:00Z", "3000.00"),
                         rcpt("feb", "2026-02-10T12:00:00Z", "3000.00"),
                         rcpt("mar", "2026-03-05T12:00:00Z", "3000.00")])
    assert fixed.segments(s2) == {"profsalon": "vip"}


def test_snapshot_version_is_a_hash_of_instant_and_values() -> None:
    a = pop.Snapshot(1, {"x": 1, "y": 2.5}, 3)
    assert a.version == pop.Snapshot(1, {"y": 2.5, "x": 1}, 9).version != pop.Snapshot(2, {"x": 1, "y": 2.5}, 3).version
    assert math.isclose(float(len(a.version)), 12.0)
