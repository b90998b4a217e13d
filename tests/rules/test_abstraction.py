"""The evaluation cache key: equal keys must mean equal CEL results."""

from __future__ import annotations

import cel
from hypothesis import given, settings
from hypothesis import strategies as st

from rules import load_ruleset
from rules.abstraction import Facets, ResultKey
from rules.evaluate import Group, Plan
from rules.metrics import CATALOGUE

PRESETS = ["boostfeel", "profsalon", "netix", "rfm", "manzana", "basket", "check_bands", "demographics"]


def test_comparisons_with_constants_are_abstracted() -> None:
    rk = ResultKey("a >= 25 && (5 < b) || c >= -1 ? d + 1 > 3 : e[0] > 1 || f >= g", list("abcdefg"))
    assert rk.abstracted() == ["a", "b", "c", "f", "g"]  # f >= g: keyed by its truth
    assert len(rk.atoms) == 1
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
    # m['tea'] is only compared with 0.5: keyed by interval, a missing key apart (an
    # attributes map leaves it missing: reading it is an error, not 0.0)
    assert rk.key([{"tea": 0.6}, ["vip"]]) == rk.key([{"tea": 0.7, "x": 1.0}, ["vip"]])
    assert rk.key([{"tea": 0.4}, ["vip"]]) != rk.key([{"tea": 0.6}, ["vip"]])
    assert rk.key([{}, ["vip"]]) != rk.key([{"tea": 0.0}, ["vip"]])


def test_constant_products_and_quotients_are_folded() -> None:
    rk = ResultKey("x >= 3.0 * 2000.0 && 7 / 2 < y && 2.0 * 3.0 <= z + 1", ["x", "y", "z"])
    assert rk.abstracted() == ["x", "y"]
    assert rk.specs[0] == ((6000.0,), frozenset({6000.0}))
    assert rk.specs[1] == ((3.0,), frozenset({3.0}))  # CEL int division truncates
    assert ResultKey("x >= 3 * 2.0", ["x"]).abstracted() == []  # int * double: not CEL
    assert ResultKey("x >= 3 / 0", ["x"]).abstracted() == []


def test_int_bands_key_on_the_truncated_quotient() -> None:
    source = 'string(int(x) / 500 * 500) + "-" + string((int(x) / 500 + 1) * 500 - 1)'
    rk = ResultKey(source, ["x"])
    assert rk.abstracted() == ["x"]
    program = cel.compile(source)
    values = [0.0, 0.4, 499.99, 500.0, 731.5, 999.0, 1000.0, -0.5, -499.0, -500.0, -731.0, 10.0**19]
    for a in values:
        for b in values:
            if rk.key([a]) == rk.key([b]):
                assert _execute(program, a) == _execute(program, b), (a, b)
    assert rk.key([501.0]) == rk.key([999.5]) != rk.key([1000.0])
    # used any other way too: exact
    assert ResultKey("int(x) / 500 > 1 || x + y > 3", ["x", "y"]).abstracted() == []


def _execute(program: object, x: float | dict[str, object]) -> object:
    try:
        return program.execute(x if isinstance(x, dict) else {"x": x})  # type: ignore[attr-defined]
    except Exception as exc:
        return type(exc).__name__


def test_comparisons_of_two_variables_key_on_their_truth() -> None:
    source = "(n >= 2 && d >= 7 && d > 1.5 * m) || ((n < 2 || m > 120.0) && d >= 182)"
    rk = ResultKey(source, ["d", "m", "n"])
    assert rk.abstracted() == ["d", "m", "n"] and len(rk.atoms) == 1
    program = cel.compile(source)
    days = [-1, 0, 6, 7, 14, 15, 16, 181, 182, 400]
    means = [0.0, 4.6, 10.0, 10.5, 11.0, 120.0, 130.0, float("nan")]
    keys: dict[object, object] = {}
    for d in days:
        for m in means:
            for n in (0, 1, 2, 5):
                result = _execute(program, {"d": d, "m": m, "n": n})
                assert keys.setdefault(rk.key([d, m, n]), result) == result, (d, m, n)
    assert rk.key([15, 10.0, 3]) != rk.key([16, 10.0, 3])  # 15 > 15.0 is false, 16 > 15.0 true
    # int * double does not exist in CEL: such values key apart from every other
    assert rk.key([15, 10, 3]) != rk.key([15, 10.0, 3])
    for shape in ("a > b + 1", "-a > b", "a > b * c", "!a > b"):
        assert ResultKey(shape, ["a", "b", "c"]).atoms == [], shape


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
    out = {}
    for n, spec in zip(key.names, key.specs, strict=True):
        if isinstance(spec, Facets):
            if spec.cuts is not None:
                out[n] = list(spec.cuts[0])
        elif spec is not None:
            out[n] = list(spec[0])
    return out


def _same_key(data: st.DataObject, value: object, spec: object, cuts: list[float] | None) -> object:
    """Another value the key cannot tell from ``value`` (``value`` if unsure)."""
    if isinstance(value, dict) and isinstance(spec, Facets) and spec.items:
        out = dict(value)
        for k, (key_cuts, _) in spec.items:
            if k in out:  # a missing key stays missing (keyed apart)
                out[k] = _same_interval(data, float(out[k]), list(key_cuts), False)
        return out
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    integer = isinstance(value, int)
    if isinstance(spec, Facets) and spec.bands and spec.cuts is None and len(spec.bands) == 1 and value >= 0:
        n = spec.bands[0]
        lo = int(value) // n * n
        if integer:
            return data.draw(st.integers(lo, lo + n - 1))
        return data.draw(st.floats(lo, lo + n, exclude_max=True, allow_nan=False))
    if cuts is not None and not (isinstance(spec, Facets) and spec.bands):
        return _same_interval(data, value, cuts, integer)
    return value


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
        spec = group.result_key.specs[i]
        if spec is not None:
            b[i] = _same_key(data, a[i], spec, cuts.get(name))
    if not group.result_key.atoms:
        assert group.result_key.key(a) == group.result_key.key(b)
    if group.result_key.key(a) == group.result_key.key(b):  # an atom may tell them apart
        assert _run(group, a) == _run(group, b)


def test_dimensions_reading_exact_values_get_their_own_group() -> None:
    groups = {tuple(d.id for _, _, d in g.dims) for g in PLAN.groups}
    assert ("basket",) in groups and ("gender",) in groups  # top_category, gender: exact strings
    shared = PLAN.groups[0]
    assert {"rfm", "rfm_score", "age_band", "netix", "check_band"} <= {d.id for _, _, d in shared.dims}
    # the bench's pair: one group, one cache, one CEL program
    plan = Plan([load_ruleset("boostfeel"), load_ruleset("rfm")])
    assert [[d.id for _, _, d in g.dims] for g in plan.groups] == [["boostfeel", "rfm", "rfm_score"]]


def test_presets_abstract_their_thresholded_metrics() -> None:
    plan = Plan([load_ruleset("boostfeel"), load_ruleset("rfm")])
    assert {"days_since_last_purchase", "visits_30d", "avg_check_30d", "visits_12m",
            "revenue_12m", "days_since_welcome_bonus"} == set(plan.groups[0].result_key.abstracted())
    # netix compares the recency with the client's own rhythm: that comparison is keyed by
    # its truth value
    assert "mean_interval_days" in PLAN.groups[0].result_key.abstracted()
    assert len(PLAN.groups[0].result_key.atoms) == 1
    assert isinstance(cel.compile("1 < 2").execute({}), bool)
