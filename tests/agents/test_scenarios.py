"""The scenarios agent's byte-level handler, scenario selection, the report and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from agents.scenarios import (
    ScenarioHandler,
    load_scenario,
    load_scenarios,
    scenario_presets,
    scenario_report,
)
from app import codecs
from app.cli import main
from app.metrics import Metrics
from app.settings import Settings
from rules import RuleSetError, load_ruleset
from rules.events import segment_changed
from rules.scenario_state import ScenarioRunner

NOW = datetime(2026, 6, 1, tzinfo=UTC)
T0 = int(datetime(2026, 5, 1, 9, 0, tzinfo=UTC).timestamp())


def _receipt(rid: str, when: int, total: str = "400.00") -> bytes:
    doc = {"receipt_id": rid, "client_id": "c-1", "occurred_at": datetime.fromtimestamp(when, UTC).isoformat(),
           "type": "sale", "total": total}
    return codecs.envelope(codecs.RECEIPT, orjson.dumps(doc))


def _change(to: str, at: int) -> bytes:
    return orjson.dumps(segment_changed(client_id="c-1", dimension="boostfeel", ruleset="boostfeel",
                                        version="v", at=at, from_="loyal", to=to, rule=f"boostfeel.{to}",
                                        cause="time", metrics={"visits_30d": 0}))


def test_settings_defaults_and_environment() -> None:
    s = Settings.from_env({})
    assert (s.topic_actions, s.topic_actions_dlq) == ("loyalty.scenario-actions", "loyalty.scenario-actions.dlq")
    assert s.scenarios == ("all",) and s.webhook_url == "" and s.webhook_attempts == 5
    s = Settings.from_env({"LOYALTY_SCENARIOS": "win_back_at_risk, vip_status", "LOYALTY_WEBHOOK_URL": "http://x",
                           "LOYALTY_WEBHOOK_ATTEMPTS": "3", "LOYALTY_WEBHOOK_BACKOFF": "0.1"})
    assert s.scenarios == ("win_back_at_risk", "vip_status")
    assert (s.webhook_url, s.webhook_attempts, s.webhook_backoff) == ("http://x", 3, 0.1)


def test_all_selects_the_presets_the_loaded_rule_sets_can_fire() -> None:
    rulesets = [load_ruleset("boostfeel"), load_ruleset("rfm")]
    ids = [s.id for s in load_scenarios(["all"], rulesets)]
    assert ids == ["remind_lapsing_rfm", "vip_status", "welcome_potentially_loyal", "win_back_at_risk"]
    assert load_scenarios(["none"], rulesets) == []
    with pytest.raises(RuleSetError, match="dimension 'netix' is not defined"):
        load_scenarios(["remind_lapsing_netix"], rulesets)  # named: must check
    with pytest.raises(RuleSetError, match="no scenario preset 'nope'"):
        load_scenario("nope")
    assert len(scenario_presets()) == 6


def test_handler_turns_bytes_into_actions_and_table_values() -> None:
    runner = ScenarioRunner([load_scenario("win_back_at_risk")], tz="Europe/Moscow")
    handler = ScenarioHandler(runner, lambda: NOW)
    stored = None
    for i in range(3):
        out = handler.client_event(_receipt(f"r{i}", T0 + i * 86_400), stored)
        assert out.value is not None and out.events == []
        stored = out.value
    assert handler.client_event(codecs.tick(T0), stored).value is None  # ticks: nothing
    assert handler.client_event(b"P{}", stored).value is None  # profiles: nothing
    assert handler.change(_change("vip", T0 + 30 * 86_400), stored).value is None  # no trigger
    assert handler.change(b"{not json", stored).value is None
    out = handler.change(_change("at_risk", T0 + 22 * 86_400), stored)
    assert [a["data"]["reward"] for a in out.step.actions] == ["138.00"]  # 0.3 * (400 + 0.05 * 1200)
    assert out.value is not None
    again = handler.change(_change("at_risk", T0 + 22 * 86_400), out.value)
    assert again.events == [] and again.step.skipped == [("win_back_at_risk", "duplicate")]
    assert again.value is None  # nothing to store: the trigger is remembered already
    conv = handler.client_event(_receipt("r-back", T0 + 25 * 86_400), out.value)
    assert [c["type"] for c in conv.events] == ["loyalty.scenario.converted"]


def test_report_reads_the_counters_per_scenario() -> None:
    metrics = Metrics.create()
    for _ in range(4):
        metrics.scenario_actions.labels("win_back_at_risk").inc()
    metrics.scenario_conversions.labels("win_back_at_risk").inc()
    report = scenario_report(metrics, ["win_back_at_risk", "vip_status"])
    assert report == {"win_back_at_risk": {"actions": 4, "conversions": 1, "conversion_rate": 0.25},
                      "vip_status": {"actions": 0, "conversions": 0, "conversion_rate": None}}
    assert scenario_report(metrics) == {"win_back_at_risk": report["win_back_at_risk"]}


def test_cli_scenarios_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "check", "win_back_at_risk", "vip_status", "--rules", "boostfeel"]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "scenario win_back_at_risk" in out and "boostfeel entered at_risk" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: bad\ntrigger: {dimension: boostfeel, entered: vip}\naction:\n"
                   "  offer: bonus\n  template: t1\n  reward: lifetime_vists * 2.0\n")
    assert main(["scenarios", "check", str(bad)]) == 1
    assert f"{bad}:6 [bad]: unknown metric 'lifetime_vists'" in capsys.readouterr().err
    assert main(["scenarios", "check", "remind_lapsing_netix", "--rules", "boostfeel"]) == 1
