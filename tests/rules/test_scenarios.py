"""Scenario files: loading, validation errors naming file and line, reward sizing, quiet hours."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rules_testkit import MSK, ts

import rules
from rules import RuleSetError, load_ruleset, preset_names
from rules.events import segment_changed
from rules.scenario_state import send_instant, size_reward
from rules.scenarios import QuietHours, Scenario, check_against, loads

SCENARIOS_DIR = Path(rules.__file__).parent / "scenarios"
PRESETS = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))

BASE = """\
scenario: demo
trigger:
  dimension: boostfeel
  entered: at_risk
when: lifetime_visits >= 2
action:
  offer: bonus
  reward: margin * (avg_check + ltv_share * lifetime_value)
  floor: "100.00"
  cap: "1500.00"
  template: winback_v1
params: {margin: 0.3, ltv_share: 0.05}
cooldown_days: 30
max_unanswered: 3
"""


def preset(name: str) -> Scenario:
    path = SCENARIOS_DIR / f"{name}.yaml"
    return loads(path.read_text(encoding="utf-8"), str(path))


def scenario(text: str = BASE, **replace: str) -> Scenario:
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return loads(text, "demo.yaml")


def change(to: str, at: int, frm: str | None = None, *, dimension: str = "boostfeel",
           client: str = "c-1", metrics: dict[str, Any] | None = None, cause: str = "time",
           version: str = "v1") -> dict[str, Any]:
    """A ``loyalty.segment.changed`` event as the engine builds it."""
    return segment_changed(client_id=client, dimension=dimension, ruleset=dimension,
                           version=version, at=at, from_=frm, to=to, rule=f"{dimension}.{to}",
                           cause=cause, metrics=metrics or {})


def _error(text: str) -> RuleSetError:
    with pytest.raises(RuleSetError) as info:
        loads(text, "bad.yaml")
    return info.value


# -- loading ---------------------------------------------------------------------------------


def test_presets_are_the_documented_seven() -> None:
    assert PRESETS == ["remind_lapsing_netix", "remind_lapsing_rfm", "third_visit_free",
                       "vip_status", "welcome_potentially_loyal", "win_back_at_risk", "win_back_churn_risk"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_checks_and_quotes_its_seed(name: str) -> None:
    sc = preset(name)
    assert sc.id == name and len(sc.version) == 12
    check_against(sc, [load_ruleset(r) for r in preset_names()])
    assert "seed 00" in sc.description  # the seed wording is quoted
    assert any("\u0400" <= ch <= "\u04ff" for ch in sc.description)  # in Russian
    assert sc.quiet_hours is not None and sc.response_days >= 7


def test_a_scenario_has_its_defaults() -> None:
    sc = scenario()
    assert (sc.cooldown_days, sc.max_unanswered, sc.response_days, sc.expires_days) == (30, 3, 14, 14)
    assert sc.action.unit == "points" and sc.action.channel == "any"
    assert sc.action.floor == Decimal("100.00") and sc.action.cap == Decimal("1500.00")
    assert sc.names() == ("lifetime_visits", "avg_check", "lifetime_value")
    assert sc.quiet_hours is None and sc.valid_from is None and sc.max_age_hours is None


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ("when: lifetime_visits >= 2", "when: lifetime_vists >= 2", 5, "unknown metric 'lifetime_vists'"),
    ("when: lifetime_visits >= 2", "when: lifetime_visits + 1", 5, "must be boolean"),
    ("when: lifetime_visits >= 2", "when: lifetime_visits >= ", 5, "syntax error"),
    ("when: lifetime_visits >= 2", "when: lifetime_visits >= 'x'", 5, "type error"),
    ("  reward: margin * (avg_check + ltv_share * lifetime_value)", "  reward: lifetime_visits >= 2",
     8, "must be a number"),
    ('  floor: "100.00"', '  floor: "2000.00"', 9, "above cap"),
    ('  floor: "100.00"', '  floor: "abc"', 9, "decimal amount"),
    ("  offer: bonus", "  offer: coupon", 7, "offer must be one of"),
    ("  template: winback_v1", "  template: 'has space'", 11, "template id"),
    ("  entered: at_risk", "  entered: []", 4, "at least one segment"),
    ("  entered: at_risk", "  entered: at_risk\n  left: lost", 3, "exactly one of"),
    ("  entered: at_risk", "  left: at_risk\n  from: vip", 5, "'from' goes with 'entered'"),
    ("  dimension: boostfeel", "  dimension: Boost", 3, "dimension id"),
    ("cooldown_days: 30", "cooldown_days: -1", 13, "cooldown_days must be a whole number"),
    ("max_unanswered: 3", "max_unanswered: 50", 14, "from 0 to 10"),
    ("max_unanswered: 3", "max_unanswered: 3\nquiet_hours: {start: 22:00, end: '09:00'}", 15,
     'quoted time like "22:00"'),
    ("max_unanswered: 3", "max_unanswered: 3\nvalid_until: 2026-01-01", 15, "instant with offset"),
    ("max_unanswered: 3", "max_unanswered: 3\nretries: 2", 15, "unknown key 'retries'"),
    ("params: {margin", "params: {lifetime_value: 1, margin", 12, "shadows a metric"),
    ("scenario: demo", "scenario: Demo!", 1, "'scenario' must be an id"),
    ("  cap:", "  cap:\n  cap:", 11, "duplicate key"),
])
def test_errors_name_file_line_and_scenario(old: str, new: str, line: int, words: str) -> None:
    err = _error(BASE.replace(old, new))
    assert err.file == "bad.yaml" and err.line == line, str(err)
    assert words in err.message, err.message
    assert str(err).startswith(f"bad.yaml:{line}")


def test_check_against_the_loaded_rule_sets_names_the_line() -> None:
    boostfeel = [load_ruleset("boostfeel")]
    check_against(scenario(), boostfeel)
    with pytest.raises(RuleSetError, match="dimension 'netix' is not defined") as info:
        check_against(scenario(**{"dimension: boostfeel": "dimension: netix"}), boostfeel)
    assert info.value.line == 3 and info.value.rule == "demo"
    with pytest.raises(RuleSetError, match="no segment 'sleeping'"):
        check_against(scenario(**{"entered: at_risk": "entered: sleeping"}), boostfeel)
    # revenue_12m is a catalogue metric, but boostfeel's events do not carry it
    with pytest.raises(RuleSetError, match="reads revenue_12m") as info:
        check_against(scenario(**{"lifetime_visits >= 2": "revenue_12m >= 2.0"}), boostfeel)
    assert info.value.line == 5
    # value dimensions (computed ids) accept any segment id
    check_against(scenario(**{"dimension: boostfeel": "dimension: rfm_score",
                              "entered: at_risk": "entered: ['111', '112']",
                              "lifetime_visits >= 2": "true"}), [load_ruleset("rfm")])


def test_trigger_matching_entered_left_from_to() -> None:
    t = scenario(**{"entered: at_risk": "entered: [at_risk, lost]\n  from: [loyal, null]"}).trigger
    assert t.matches(change("at_risk", 0, "loyal")["data"])
    assert t.matches(change("lost", 0, None)["data"])  # null: first segment of the client
    assert not t.matches(change("at_risk", 0, "vip")["data"])
    assert not t.matches(change("at_risk", 0, "loyal", dimension="netix")["data"])
    left = scenario(**{"entered: at_risk": "left: vip\n  to: [loyal]"}).trigger
    assert left.matches(change("loyal", 0, "vip")["data"])
    assert not left.matches(change("at_risk", 0, "vip")["data"])
    assert not left.matches(change("vip", 0, "loyal")["data"])


# -- reward: Decimal, floor and cap -------------------------------------------------------------


@pytest.mark.parametrize(("avg_check", "ltv", "expected"), [
    (400.0, 12000.0, "300.00"),
    (250.0, 2500.0, "112.50"),
    (200.0, 1000.0, "100.00"),  # 75.00 -> floor
    (1500.0, 90000.0, "1500.00"),  # 1800.00 -> cap
    (333.33, 4444.44, "166.67"),  # 0.3 * 555.552 = 166.6656 -> half up to 2 places
])
def test_win_back_reward_worked_examples(avg_check: float, ltv: float, expected: str) -> None:
    sc = preset("win_back_at_risk")
    assert sc.action.reward is not None
    value = sc.action.reward.program.execute({"avg_check": avg_check, "lifetime_value": ltv,
                                              "lifetime_visits": 5})
    reward = size_reward(sc.action, value)
    assert isinstance(reward, Decimal) and str(reward) == expected


def test_reward_rounding_is_decimal_half_up_not_float() -> None:
    action = scenario(**{'  floor: "100.00"\n  cap: "1500.00"\n': ""}).action
    assert str(size_reward(action, 2.675)) == "2.68"  # round(2.675, 2) == 2.67 in floats
    assert str(size_reward(action, 0.1 + 0.2)) == "0.30"
    assert str(size_reward(action, 150)) == "150.00"
    with pytest.raises(ValueError):
        size_reward(action, True)
    bounded = scenario().action
    assert bounded.floor is not None and bounded.cap is not None
    assert size_reward(bounded, 99.994) == bounded.floor
    assert size_reward(bounded, 1500.004) == Decimal("1500.00")
    assert size_reward(bounded, 1500.005) == bounded.cap


# -- quiet hours --------------------------------------------------------------------------------


def _local(t: int, tz: str = MSK) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(("when", "expected"), [
    ("2026-03-03T23:40:00+03:00", "2026-03-04 09:00"),  # after start: next morning
    ("2026-03-04T03:15:00+03:00", "2026-03-04 09:00"),  # after midnight: this morning
    ("2026-03-04T08:59:59+03:00", "2026-03-04 09:00"),
    ("2026-03-04T09:00:00+03:00", "2026-03-04 09:00"),  # the end is not quiet
    ("2026-03-04T21:59:00+03:00", "2026-03-04 21:59"),
    ("2026-03-04T22:00:00+03:00", "2026-03-05 09:00"),
    ("2026-12-31T23:00:00+03:00", "2027-01-01 09:00"),
])
def test_quiet_hours_shift_in_the_business_time_zone(when: str, expected: str) -> None:
    quiet = QuietHours(22 * 60, 9 * 60)
    assert _local(send_instant(quiet, ts(when), ZoneInfo(MSK))) == expected


def test_quiet_hours_within_a_day_and_across_a_dst_change() -> None:
    lunch = QuietHours(13 * 60, 15 * 60)
    assert _local(send_instant(lunch, ts("2026-03-04T13:30:00+03:00"), ZoneInfo(MSK))) == "2026-03-04 15:00"
    assert _local(send_instant(lunch, ts("2026-03-04T12:30:00+03:00"), ZoneInfo(MSK))) == "2026-03-04 12:30"
    # Berlin springs forward on 29 March 2026 (02:00 -> 03:00): 09:00 is 07:00 UTC that day
    berlin = ZoneInfo("Europe/Berlin")
    quiet = QuietHours(22 * 60, 9 * 60)
    shifted = send_instant(quiet, ts("2026-03-28T23:30:00+01:00"), berlin)
    assert _local(shifted, "Europe/Berlin") == "2026-03-29 09:00"
    assert shifted == ts("2026-03-29T07:00:00+00:00")
    # an end inside the gap (02:30 does not exist that night) still moves forward
    gap = QuietHours(22 * 60, 2 * 60 + 30)
    t = ts("2026-03-28T23:30:00+01:00")
    assert send_instant(gap, t, berlin) > t
