"""loyalty call-plan: the open actions of channel ``call`` as a CSV with the reason and the
client's key figures (Netix, seed 004: "составить план обзвона")."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from app.batch.callplan import COLUMNS, plan
from app.cli.main import main
from rules.calendar import to_epoch
from rules.events import segment_changed
from rules.inputs.communications import Communication
from rules.inputs.receipts import parse_receipt
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import ScenarioRunner
from rules.scenarios import loads

T = to_epoch(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
CALL = loads("""scenario: call_lapsing
trigger: {dimension: netix, entered: [losing, lost]}
when: lifetime_value >= 3000.0
action: {offer: reminder, reward: "0.1 * avg_check", unit: points, channel: call, template: call_v1}
response_days: 7
""", "call.yaml")


def _events() -> list[dict[str, object]]:
    runner = ScenarioRunner([CALL], policy=ContactPolicy.unlimited())
    out: list[dict[str, object]] = []
    for cid, total in (("ivanov", "3000.00"), ("petrova", "5000.00"), ("sidorov", "4000.00")):
        state = None
        for i in range(3):
            r = parse_receipt({"receipt_id": f"{cid}-{i}", "client_id": cid, "type": "sale", "total": total,
                               "occurred_at": datetime.fromtimestamp(T - (90 + i) * 86_400, UTC).isoformat()}, None)
            state, _ = runner.receipt(state, r)
        change = segment_changed(client_id=cid, dimension="netix", ruleset="netix", version="v", at=T,
                                 from_="regular", to="losing", rule="netix.losing", cause="time", metrics={})
        state, step = runner.change(state, change)
        out += step.events
        if cid == "sidorov":  # took the call: answered, off the list
            _, step = runner.communication(state, Communication(
                "call-1", cid, datetime.fromtimestamp(T + 3600, UTC), "call", "answered", None, None, T + 3600))
            out += step.events
    return out


def test_the_plan_lists_open_call_actions_with_reason_and_figures() -> None:
    events = _events()
    segments = [{"client_id": "ivanov", "segments": {"netix": "losing"}, "metrics": {"days_since_last_purchase": 95}}]
    profiles = [{"client_id": "petrova", "first_name": "Anna", "phone": "+79990001122"}]
    rows = plan(events, segments, profiles)
    assert [(r["client_id"], r["lifetime_value"], r["reward"]) for r in rows] == [
        ("petrova", 15000.0, "500.00"), ("ivanov", 9000.0, "300.00")]  # by value, highest first
    assert rows[0]["reason"] == "netix: regular -> losing" and rows[0]["phone"] == "+79990001122"
    assert rows[1]["days_since_last_purchase"] == 95 and rows[1]["segments"] == "netix=losing"
    assert {r["client_id"] for r in plan(events, open_only=False)} == {"ivanov", "petrova", "sidorov"}
    assert plan(events, channel="sms") == []


def test_cli_call_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in _events()))
    out = tmp_path / "plan.csv"
    assert main(["call-plan", "--actions", str(actions), "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == COLUMNS and [r["client_id"] for r in rows] == ["petrova", "ivanov"]
    assert '"rows": 2' in capsys.readouterr().err.replace('"rows":2', '"rows": 2')
