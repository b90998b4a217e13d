"""Scenarios in the clients handler (bytes in, actions out), scenario selection, the report and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from agents.handler import ClientHandler
from agents.scenarios import (
    load_scenario,
    load_scenarios,
    scenario_presets,
)
from app.cli.main import main
from app.settings import Settings
from app.wire import codecs
from rules import Engine, RuleSetError, load_ruleset
from rules.scenario_state import ScenarioRunner

NOW = datetime(2026, 6, 1, tzinfo=UTC)
T0 = int(datetime(2026, 5, 1, 9, 0, tzinfo=UTC).timestamp())


def _receipt(rid: str, when: int, total: str = "400.00") -> bytes:
    doc = {"receipt_id": rid, "client_id": "c-1", "occurred_at": datetime.fromtimestamp(when, UTC).isoformat(),
           "type": "sale", "total": total}
    return codecs.envelope(codecs.RECEIPT, orjson.dumps(doc))


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
    assert len(scenario_presets()) == 7
    # win_back_churn_risk fires on churn_risk, when that rule set is loaded
    ids = [s.id for s in load_scenarios(["all"], [*rulesets, load_ruleset("churn_risk")])]
    assert "win_back_churn_risk" in ids


def test_clients_handler_runs_scenarios_with_their_state_in_the_table_value() -> None:
    runner = ScenarioRunner([load_scenario("win_back_at_risk")], tz="Europe/Moscow")
    now = [datetime.fromtimestamp(T0 + 3 * 86_400, UTC)]
    handler = ClientHandler(Engine([load_ruleset("boostfeel")], tz="Europe/Moscow"), lambda: now[0], runner)
    stored = None
    for i in range(3):
        out = handler.handle("c-1", _receipt(f"r{i}", T0 + i * 86_400), stored)
        assert out.value is not None and out.actions == []
        assert codecs.scenario_part(out.value) is not None  # the ledger
        stored = out.value
    assert handler.handle("c-1", _receipt("r1", T0 + 86_400), stored).value is None  # duplicate
    due = codecs.split_table_value(stored)[0]
    assert due is not None and 20 * 86_400 <= due - (T0 + 2 * 86_400) <= 21 * 86_400  # 20 days idle
    now[0] = datetime.fromtimestamp(due + 3600, UTC)
    out = handler.handle("c-1", codecs.tick(due), stored)
    assert [(e["data"]["to"], e["data"]["cause"]) for e in out.events] == [("at_risk", "time")]
    assert [a["data"]["reward"] for a in out.scenarios.actions] == ["138.00"]  # 0.3 * (400 + 0.05 * 1200)
    again = handler.handle("c-1", codecs.tick(due), stored)  # redelivered against the old value
    assert [a["id"] for a in again.actions] == [a["id"] for a in out.actions]
    assert out.value is not None
    back = handler.handle("c-1", _receipt("r-back", due + 3 * 86_400), out.value)
    assert [c["type"] for c in back.actions] == ["loyalty.scenario.converted", "loyalty.scenario.revenue"]
    plain = ClientHandler(Engine([load_ruleset("boostfeel")], tz="Europe/Moscow"), lambda: now[0])
    kept = plain.handle("c-1", _receipt("r-later", due + 4 * 86_400), back.value)
    assert kept.value is not None and codecs.scenario_part(kept.value) == codecs.scenario_part(back.value or b"")


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
