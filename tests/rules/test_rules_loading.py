"""Rule-set loading: every error names the file, the line and the rule."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from rules_testkit import DAY, feed, rcpt, ts

from app.cli.main import main as cli_main
from rules import Engine, RuleSetError, load_ruleset, preset_names
from rules.ruleset import loads, preset_path

GOOD = dedent("""\
    ruleset: shop
    description: test rules
    params:
      many: 3
    dimensions:
      - id: activity
        default: idle
        segments:
          - id: busy
            when: visits_30d >= many
          - id: lapsed
            when: days_since_last_purchase >= 30
""")


def fail(text: str, file: str = "shop.yaml") -> RuleSetError:
    with pytest.raises(RuleSetError) as info:
        loads(text, file)
    return info.value


def with_when(when: str) -> str:
    return GOOD.replace("visits_30d >= many", when)


def test_good_rules_load() -> None:
    rs = loads(GOOD, "shop.yaml")
    assert rs.name == "shop" and rs.path == "shop.yaml" and rs.params == {"many": 3}
    (dim,) = rs.dimensions
    assert dim.id == "activity" and dim.default == "idle" and dim.line == 6
    assert [s.id for s in dim.segments] == ["busy", "lapsed"]
    assert [s.when.line for s in dim.segments if s.when] == [10, 12]
    assert dim.daily_windows == (30,)
    assert dim.metrics == ("days_since_last_purchase", "visits_30d")


def test_yaml_syntax_error_names_file_and_line() -> None:
    exc = fail(GOOD.replace("    default: idle", "   default: idle"))
    assert exc.file == "shop.yaml" and exc.line == 7
    assert "YAML" in exc.message and str(exc).startswith(f"shop.yaml:{exc.line}")


def test_yaml_duplicate_key() -> None:
    exc = fail(GOOD.replace("    default: idle\n", "    default: idle\n    default: other\n"))
    assert exc.line == 8 and "duplicate key 'default'" in exc.message


def test_not_a_mapping() -> None:
    assert fail("- just\n- a list\n").line == 1


@pytest.mark.parametrize(("when", "fragment"), [
    ("visits_31d >= many", "unknown metric 'visits_31d'"),
    ("visits_30d >= ", "syntax error"),
    ("visits_30d >= many &&", "syntax error"),
    ("visits_30d >= many)", "syntax error"),
    ("visits_30d => many", "syntax error"),
    ("visits_30d + 1.5 > 2", "type error"),
    ("visits_30d > 'ten'", "type error"),
    ("last_store > 3", "type error"),
    ("visits_30d + 1", "a condition must be boolean, got int"),
    ("string(visits_30d)", "a condition must be boolean, got str"),
    ("days_since_last_purchase * 2 > 10", "must be compared directly"),
    ("2 * days_since_last_purchase > 10", "must be compared directly"),
    ("10 < days_since_last_purchase + 1", "must be compared directly"),
    ("age - 18 >= 0", "must be compared directly"),
    ("days_since_last_purchase > visits_30d", "changes with time"),
    ("days_since_last_purchase > 'x'", "type error"),
])
def test_condition_errors_name_file_line_and_rule(when: str, fragment: str) -> None:
    exc = fail(with_when(when))
    assert (exc.file, exc.line, exc.rule) == ("shop.yaml", 10, "activity.busy")
    assert fragment in exc.message
    assert str(exc).startswith("shop.yaml:10 [activity.busy]: ")


@pytest.mark.parametrize("when", [
    "days_since_last_purchase >= many", "many <= days_since_last_purchase",
    "days_since_last_purchase > 1.5 * mean_interval_days", "age >= 18 && age < 25",
    "visits_30d >= many || (has_purchase && days_since_first_purchase < 7)",
    "category_share['coffee'] >= 0.5", "\"'vip' in tags\"", "revenue_30d >= 5000.0",
    "revenue_30d >= 5000",  # CEL compares int and double numerically
])
def test_valid_conditions(when: str) -> None:
    loads(with_when(when), "shop.yaml")


def test_duplicate_segment_id() -> None:
    exc = fail(GOOD.replace("id: lapsed", "id: busy"))
    assert (exc.line, exc.rule) == (11, "activity.busy") and "duplicate segment id" in exc.message


def test_duplicate_dimension_id_in_one_file() -> None:
    exc = fail(GOOD + "  - id: activity\n    value: visits_30d\n")
    assert (exc.line, exc.rule) == (13, "activity") and "duplicate dimension id" in exc.message


def test_duplicate_dimension_id_across_rule_sets_in_one_engine() -> None:
    a = loads(GOOD, "a.yaml")
    b = loads(GOOD.replace("ruleset: shop", "ruleset: other_shop"), "b.yaml")
    with pytest.raises(RuleSetError) as info:
        Engine([a, b])
    exc = info.value
    assert (exc.file, exc.line, exc.rule) == ("b.yaml", 6, "activity")
    assert "a.yaml" in exc.message
    Engine([a, loads(GOOD.replace("id: activity", "id: activity2"), "c.yaml")])


def test_missing_default() -> None:
    exc = fail(GOOD.replace("    default: idle\n", ""))
    assert (exc.rule, exc.line) == ("activity", 8) and "default" in exc.message
    loads(GOOD.replace("    default: idle\n", "") + "      - id: idle\n", "shop.yaml")


@pytest.mark.parametrize(("text", "line", "rule", "fragment"), [
    (GOOD.replace("ruleset: shop", "ruleset: Shop!"), 1, None, "'ruleset'"),
    (GOOD.replace("description:", "descr:"), 2, None, "unknown key 'descr'"),
    (GOOD.replace("    default: idle", "    defualt: idle"), 7, "activity", "unknown key"),
    (GOOD.replace("        when: visits_30d", "        wen: visits_30d"), 10,
     "activity.busy", "unknown key 'wen'"),
    (GOOD.replace("many: 3", "visits_30d: 3"), 4, None, "shadows a metric"),
    (GOOD.replace("    default: idle", "    default: idle\n    min_days: -1"), 8, "activity",
     "min_days"),
    (GOOD.replace("    default: idle", "    default: idle\n    value: visits_30d"), 6,
     "activity", "either 'segments' or 'value'"),
    ("ruleset: shop\ndimensions: []\n", 2, None, "non-empty"),
])
def test_structure_errors(text: str, line: int, rule: str | None, fragment: str) -> None:
    exc = fail(text)
    assert (exc.line, exc.rule) == (line, rule) and fragment in exc.message


def test_let_errors_name_the_let() -> None:
    text = GOOD.replace("dimensions:", "let:\n  score: visits_30d +\ndimensions:")
    exc = fail(text)
    assert (exc.line, exc.rule) == (6, "score") and "syntax error" in exc.message


def test_version_is_a_content_hash() -> None:
    v1 = loads(GOOD, "a.yaml").version
    assert loads(GOOD, "b.yaml").version == v1  # the file name does not matter
    assert loads(GOOD.replace("many: 3", "many: 4"), "a.yaml").version != v1
    assert loads(GOOD + "\n", "a.yaml").version != v1
    assert loads(GOOD, "a.yaml", {"many": 5}).version != v1
    assert loads(GOOD, "a.yaml", {"many": 5}).version == loads(GOOD, "a.yaml", {"many": 5}).version
    assert len(v1) == 12
    assert all(load_ruleset(p).version == load_ruleset(p).version for p in preset_names())
    versions = {load_ruleset(p).version for p in preset_names()}
    assert len(versions) == len(preset_names())


def test_overrides_are_applied_and_checked() -> None:
    rs = loads(GOOD, "a.yaml", {"many": 7})
    assert rs.params["many"] == 7 and "7" in rs.dimensions[0].segments[0].when.text  # type: ignore[union-attr]
    exc = fail_override({"few": 1})
    assert "unknown parameter 'few'" in exc.message


def fail_override(overrides: dict[str, object]) -> RuleSetError:
    with pytest.raises(RuleSetError) as info:
        loads(GOOD, "a.yaml", overrides)
    return info.value


def test_bad_override_value_is_a_rule_set_error() -> None:
    fail_override({"many": "abc"})


def test_dimension_local_parameter_can_be_overridden() -> None:
    text = GOOD.replace("    default: idle", "    default: idle\n    params:\n      lots: 9")
    text = text.replace("visits_30d >= many", "visits_30d >= lots")
    rs = loads(text, "a.yaml", {"lots": 2})
    assert "2" in rs.dimensions[0].segments[0].when.text  # type: ignore[union-attr]


_LOAD_CRASH = (
    "BUG: rules/ruleset.py _Compiler._typecheck catches (TypeError, RuntimeError, ValueError) "
    "only; CEL raises ZeroDivisionError / KeyError / OverflowError for these conditions with "
    "the sample values, and the exception escapes load() without file, line or rule")


@pytest.mark.parametrize("when", [
    pytest.param(w, id=i)
    for w, exc, i in [
        ("visits_30d / 0 > 1", ZeroDivisionError, "div-zero"),
        ("visits_30d % 0 == 1", ZeroDivisionError, "mod-zero"),
        ("category_share[top_category] > 0.5", KeyError, "map-key"),
        ("int(lifetime_revenue * 1e30) > 1", OverflowError, "int-overflow"),
    ]
])
def test_cel_runtime_errors_at_load_are_rule_set_errors(when: str) -> None:
    exc = fail(with_when(when))
    assert (exc.line, exc.rule) == (10, "activity.busy")


def test_division_by_zero_at_run_time_counts_as_no_match() -> None:
    rs = loads(with_when("lifetime_visits / visits_7d > 1"), "a.yaml")
    eng = Engine([rs])
    t = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt("a", t)])  # visits_7d == 1: fine
    eng.advance(s, t + 8 * DAY)  # visits_7d == 0: division by zero
    assert eng.segments(s) == {"activity": "idle"} and eng.errors >= 1


def test_a_failing_dimension_does_not_disturb_the_others() -> None:
    failing = loads(with_when("lifetime_visits / visits_7d > 1"), "a.yaml")
    both, alone = Engine([load_ruleset("boostfeel"), failing]), Engine([load_ruleset("boostfeel")])
    solo = Engine([loads(with_when("lifetime_visits / visits_7d > 1"), "a.yaml")])
    assert len(both.plan.groups) == 2
    t = ts("2026-03-02T10:00:00Z")
    receipts = [rcpt("a", t), rcpt("b", t + DAY)]
    (s, _), (r, _), (q, _) = feed(both, receipts), feed(alone, receipts), feed(solo, receipts)
    for days in (3, 8, 25, 45):
        events = both.advance(s, t + days * DAY)
        assert [e for e in events if e["data"]["dimension"] == "boostfeel"] == alone.advance(r, t + days * DAY)
        assert [e for e in events if e["data"]["dimension"] == "activity"] == solo.advance(q, t + days * DAY)
        assert both.segments(s) == {**alone.segments(r), **solo.segments(q)}
    assert both.errors >= 1 and solo.errors >= 1


def test_time_thresholds_through_nested_lets() -> None:
    text = dedent("""\
        ruleset: nested
        let:
          recent: days_since_last_purchase <= 10
          score: "recent ? 1 : 0"
        dimensions:
          - id: fresh
            default: stale
            segments:
              - id: fresh
                when: score == 1
    """)
    eng = Engine([loads(text, "nested.yaml")])
    t = ts("2026-03-02T10:00:00Z")
    s, _ = feed(eng, [rcpt("a", t)])
    assert eng.segments(s) == {"fresh": "fresh"}
    assert eng.next_due(s) == t + 11 * DAY


def test_file_errors_name_the_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(with_when("visits_30d > 'many'"), encoding="utf-8")
    with pytest.raises(RuleSetError) as info:
        load_ruleset(str(path))
    assert (info.value.file, info.value.line, info.value.rule) == (str(path), 10, "activity.busy")
    with pytest.raises(RuleSetError, match="cannot read"):
        load_ruleset(str(tmp_path / "absent.yaml"))
    with pytest.raises(RuleSetError, match="no preset 'nope'"):
        load_ruleset("nope")


def test_presets_load() -> None:
    for name in preset_names():
        rs = load_ruleset(name)
        assert rs.name == name and rs.path == str(preset_path(name))
    Engine([load_ruleset(n) for n in preset_names()])  # no dimension id clashes


def test_cli_rules_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["rules", "check", *preset_names()]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: ") == len(preset_names())
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(with_when("visits_30d + 1.5 > 2"), encoding="utf-8")
    assert cli_main(["rules", "check", str(good)]) == 0
    capsys.readouterr()
    assert cli_main(["rules", "check", str(good), str(bad)]) != 0
    err = capsys.readouterr().err
    assert f"{bad}:10 [activity.busy]: type error" in err
    assert cli_main(["rules", "check", str(tmp_path / "missing.yaml")]) != 0


def test_a_new_rules_version_re_evaluates_a_client_at_the_sweep_instant() -> None:
    """Engine.reevaluate: what the pipeline runs for a client written under other rules."""
    from rules import parse_receipt
    from tests.rules.rules_testkit import DAY, receipt_doc

    old = Engine([load_ruleset("boostfeel"), load_ruleset("netix")])
    t0 = 1_780_000_000
    result = old.receipt(None, parse_receipt(receipt_doc("r1", t0, "500.00"), None))
    state = result.state
    assert state is not None and set(state.segments) == {"boostfeel", "netix"}
    new = Engine([load_ruleset("boostfeel", {"at_risk_days": 5}), load_ruleset("rfm")])
    assert len({old.fingerprint, new.fingerprint, Engine([load_ruleset("boostfeel")]).fingerprint}) == 3
    assert Engine([load_ruleset("boostfeel")], tz="Europe/Moscow").fingerprint \
        != Engine([load_ruleset("boostfeel")]).fingerprint  # the time zone counts too
    events = new.reevaluate(state, t0 + 6 * DAY)
    got = {(e["data"]["dimension"], e["data"]["from"], e["data"]["to"]) for e in events}
    assert ("boostfeel", "other", "at_risk") in got
    assert {d for d, _, _ in got} == {"boostfeel", "rfm", "rfm_score"}  # rfm's are new: from None
    assert all(e["data"]["cause"] == "rules" and e["time"] == events[0]["time"] for e in events)
    assert "netix" not in state.segments  # no longer defined
    assert state.clock == t0 + 6 * DAY
    assert new.reevaluate(state, t0 + 6 * DAY) == []  # nothing left to change
    assert new.reevaluate(state, t0) == []  # never before the client's clock
    assert state.clock == t0 + 6 * DAY
