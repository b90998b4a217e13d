"""The evaluation cache key: equal keys must mean equal CEL results."""

from __future__ import annotations

import cel
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import load_ruleset
from rules.abstraction import ResultKey
from rules.evaluate import Group, Plan
from rules.metrics import CATALOGUE

PRESETS = ["boostfeel", "profsalon", "netix", "rfm", "manzana", "basket", "check_bands", "demographics"]


def test_comparisons_with_constants_are_abstracted() -> None:
    rk = ResultKey("a >= 25 && (5 < b) || c >= -1 ? d + 1 > 3 : e[0] > 1 || f >= g", list("abcdefg"))
    assert rk.abstracted() == ["a", "b", "c"]
    assert rk.key([26, 1, 0, 0, 0, 0, 0])[:3] == rk.key([31, 4, 7, 9, 9, 9, 9])[:3]
    assert rk.key([25, 1, 0, 0, 0, 0, 0])[0] != rk.key([26, 1, 0, 0, 0, 0, 0])[0]  # == 25 differs
    assert rk.key([24, 1, 0, 0, 0, 0, 0])[0] != rk.key([25, 1, 0, 0, 0, 0, 0])[0]
    # exact values for the rest
    assert rk.key([0, 0, 0, 1, 0, 0, 0]) != rk.key([0, 0, 0, 2, 0, 0, 0])


def test_mixed_use_keys_on_the_exact_value() -> None:
    rk = ResultKey("x >= 10 && x * 2 < 50", ["x"])
    assert rk.abstracted() == []
    assert rk.key([11]) != rk.key([12])


def test_maps_and_lists_are_hashable_keys() -> None:
    rk = ResultKey("m['tea'] > 0.5 && 'vip' in tags", ["m", "tags"])
    assert rk.key([{"tea": 0.6, "coffee": 0.4}, ["vip"]]) == rk.key([{"coffee": 0.4, "tea": 0.6}, ["vip"]])
    assert rk.key([{"tea": 0.6}, ["vip"]]) != rk.key([{"tea": 0.7}, ["vip"]])


def test_nan_and_type_changes_do_not_collide() -> None:
    rk = ResultKey("x > 1.5", ["x"])
    assert rk.key([float("nan")]) != rk.key([0.0])
    assert rk.key([True]) != rk.key([1])


def _values(name: str, cuts: dict[str, list[float]]) -> st.SearchStrategy[object]:
    kind = CATALOGUE[name].type
    near = cuts.get(name, [0.0])
    if kind == "int":
        return st.one_of(st.integers(-1, 400), st.sampled_from(near).map(int).flatmap(
            lambda c: st.integers(c - 1, c + 1)))
    if kind == "double":
        return st.one_of(st.floats(-1, 1e5, allow_nan=False), st.sampled_from(near).flatmap(
            lambda c: st.sampled_from([c - 0.01, c, c + 0.01])))
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.sampled_from(["", "f", "m", "coffee", "tea", "s-1"])
    if kind == "map":
        return st.dictionaries(st.sampled_from(["coffee", "tea", "food", "bakery"]),
                               st.sampled_from([0.0, 0.2, 0.3, 0.5, 0.6, 1.0]), max_size=3)
    return st.lists(st.sampled_from(["vip", "staff", "b2b"]), max_size=2, unique=True)


PLAN = Plan([load_ruleset(p) for p in PRESETS])


def _cuts(group: Group) -> dict[str, list[float]]:
    key = group.result_key
    return {n: list(spec[0]) for n, spec in zip(key.names, key.specs, strict=True) if spec}


def _run(group: Group, values: list[object]) -> object:
    ctx = dict(zip(group.names, values, strict=True))
    for name, keys in group.map_keys.items():
        ctx[name] = {**{k: 0.0 for k in keys}, **ctx[name]}  # type: ignore[dict-item]
    try:
        return group.program.execute(ctx)
    except Exception as exc:
        return type(exc).__name__


def _same_interval(data: st.DataObject, value: float, cuts: list[float], integer: bool) -> float:
    """Another value with the same position among ``cuts`` (the value itself if it is one)."""
    if value in cuts:
        return value
    lower = max([c for c in cuts if c < value], default=value - 1000)
    upper = min([c for c in cuts if c > value], default=value + 1000)
    if integer:
        return data.draw(st.integers(int(lower) + 1, -int(-upper) - 1).filter(lambda v: lower < v < upper))
    return data.draw(st.floats(lower, upper, exclude_min=True, exclude_max=True, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_equal_keys_give_equal_results_on_every_preset(data: st.DataObject) -> None:
    group = data.draw(st.sampled_from(PLAN.groups))
    cuts = _cuts(group)
    a = [data.draw(_values(n, cuts)) for n in group.names]
    b = list(a)
    for i, name in enumerate(group.names):
        value = a[i]
        if name in cuts and isinstance(value, (int, float)) and not isinstance(value, bool):
            b[i] = _same_interval(data, value, cuts[name], isinstance(value, int))
    assert group.result_key.key(a) == group.result_key.key(b)
    assert _run(group, a) == _run(group, b)


def test_dimensions_reading_exact_values_get_their_own_group() -> None:
    groups = {tuple(d.id for _, _, d in g.dims) for g in PLAN.groups}
    assert ("basket",) in groups and ("netix",) in groups
    shared = PLAN.groups[0]
    assert {"rfm", "rfm_score", "age_band"} <= {d.id for _, _, d in shared.dims}
    # the bench's pair: one group, one cache, one CEL program
    plan = Plan([load_ruleset("boostfeel"), load_ruleset("rfm")])
    assert [[d.id for _, _, d in g.dims] for g in plan.groups] == [["boostfeel", "rfm", "rfm_score"]]


def test_presets_abstract_their_thresholded_metrics() -> None:
    plan = Plan([load_ruleset("boostfeel"), load_ruleset("rfm")])
    assert {"days_since_last_purchase", "visits_30d", "avg_check_30d", "visits_12m",
            "revenue_12m", "days_since_welcome_bonus"} == set(plan.groups[0].result_key.abstracted())
    # netix compares the recency with the client's own rhythm: keyed on the exact value
    netix = next(g for g in PLAN.groups if g.dims[0][2].id == "netix")
    assert "days_since_last_purchase" not in netix.result_key.abstracted()
    assert "days_since_last_purchase" in PLAN.groups[0].result_key.abstracted()
    assert isinstance(cel.compile("1 < 2").execute({}), bool)
