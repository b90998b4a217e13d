"""Scenarios in replay give what the clients handler gives when each client is ticked at its
due instants (the stream): the same actions, conversions, responses and revenue, calendar
occurrences included; and ``loyalty replay --scenarios`` writes them and their report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.handler import ClientHandler, route
from agents.scenarios import load_scenarios
from app.batch.order import COMMUNICATION, PROFILE, RECEIPT, sort_key
from app.batch.replay import Replay, time_order
from app.batch.replay_scenarios import ScenarioFeed
from app.batch.simulate import SimConfig, generate, profiles
from app.batch.simulate_comm import communications
from app.cli.main import main
from app.projection.scenarios import tally
from app.wire import codecs
from rules import Engine, RejectedInput, load_ruleset
from rules.calendar import to_epoch
from rules.scenario_state import ScenarioRunner
from rules.scenarios import loads

CFG = SimConfig(clients=160, days=60, seed=5)
AS_OF = datetime(2026, 6, 2, tzinfo=UTC)
TZ = "Europe/Moscow"
RULES = ["boostfeel", "demographics"]
CALENDARS = ["""scenario: spring_day
trigger: {yearly: "05-01", at: "10:00", dimension: gender, in: f}
action: {offer: gift, reward: "0.1 * avg_check", floor: "50", template: spring_v1, channel: sms}
campaign: holidays
""", """scenario: tatyana_day
trigger: {yearly: "05-20", at: "11:30"}
when: first_name == "Татьяна"
action: {offer: bonus, reward: "150", template: tatyana_v1, channel: email}
campaign: holidays
"""]


def _inputs() -> list[tuple[str, list[bytes]]]:
    return [("profiles", list(profiles(CFG))), ("communications", list(communications(CFG))),
            ("receipts", list(generate(CFG)))]


def _runner() -> ScenarioRunner:
    rulesets = [load_ruleset(r) for r in RULES]
    scenarios = load_scenarios(["win_back_at_risk", "welcome_potentially_loyal", "vip_status"], rulesets)
    return ScenarioRunner(scenarios + [loads(t, "cal.yaml") for t in CALENDARS], tz=TZ)


def _replay(inputs: list[tuple[str, list[bytes]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine([load_ruleset(r) for r in RULES], tz=TZ)
    changes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    rp = Replay(engine, AS_OF, changes.append, lambda _: None,
                scenarios=ScenarioFeed(_runner(), engine, events.append))
    time_order(rp, [(src, list(enumerate(lines, 1))) for src, lines in inputs], 1 << 24)
    rp.finish()
    return changes, events


def _stream(inputs: list[tuple[str, list[bytes]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The clients handler over the inputs in event-time order, each client ticked at its due
    instants, the clock at the instant processed."""
    kinds = {"profiles": (codecs.PROFILE, PROFILE), "communications": (codecs.COMMUNICATION, COMMUNICATION),
             "receipts": (codecs.RECEIPT, RECEIPT)}
    messages = []
    for src, lines in inputs:
        kind, order = kinds[src]
        for raw in lines:
            try:
                cid, envelope, at = route(raw, kind, AS_OF)
            except RejectedInput:
                continue
            if cid is not None:
                messages.append((sort_key(at if at is not None else -(2**62), order, raw), cid, envelope, at))
    clock = [0]
    handler = ClientHandler(Engine([load_ruleset(r) for r in RULES], tz=TZ),
                            lambda: datetime.fromtimestamp(clock[0], UTC), _runner())
    table: dict[str, bytes] = {}
    due: dict[str, int | None] = {}
    changes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def apply(cid: str, message: bytes) -> None:
        out = handler.handle(cid, message, table.get(cid))
        if out.value is not None:
            table[cid], due[cid] = out.value, codecs.table_due(out.value)
        changes.extend(out.events)
        events.extend(out.actions)

    def ticks(until: int) -> None:
        while True:
            pending = [(d, c) for c, d in due.items() if d is not None and d <= until]
            if not pending:
                return
            d, c = min(pending)
            clock[0] = d
            apply(c, codecs.tick(d, d))

    for _, cid, envelope, at in sorted(messages, key=lambda m: m[0]):
        if at is not None:
            ticks(at)
            clock[0] = at
        apply(cid, envelope)
    ticks(to_epoch(AS_OF))
    return changes, events


def test_replay_gives_what_the_ticked_handler_gives() -> None:
    inputs = _inputs()
    (rc, re), (sc, se) = _replay(inputs), _stream(inputs)
    assert sorted(e["id"] for e in rc) == sorted(e["id"] for e in sc)
    by_id = {e["id"]: e for e in se}
    assert {e["id"]: e for e in re} == by_id and len(re) == len(se)
    kinds = {}
    for e in re:
        kinds[e["type"]] = kinds.get(e["type"], 0) + 1
    calendar = {e["data"]["scenario"] for e in re if e["type"] == "loyalty.scenario.action"}
    assert {"spring_day", "tatyana_day", "win_back_at_risk"} <= calendar, calendar
    assert len(kinds) == 4, kinds  # actions, conversions, responses and revenue all occur
    assert tally(re) == tally(se)


def test_cli_replay_with_scenarios(tmp_path: Path) -> None:
    paths = {}
    for src, lines in _inputs():
        paths[src] = tmp_path / f"{src}.jsonl"
        paths[src].write_bytes(b"\n".join(lines) + b"\n")
    cal = tmp_path / "spring_day.yaml"
    cal.write_text(CALENDARS[0])
    policy = tmp_path / "policy.yaml"
    policy.write_text("max_actions: 1\nperiod_days: 30\n")
    args = ["replay", "--rules", "boostfeel", "--rules", "demographics", "--input", str(paths["receipts"]),
            "--profiles", str(paths["profiles"]), "--communications", str(paths["communications"]),
            "--as-of", AS_OF.isoformat(), "--tz", TZ, "--scenarios", f"win_back_at_risk,{cal}",
            "--contact-policy", str(policy), "--actions-out", str(tmp_path / "actions.jsonl"),
            "--summary-out", str(tmp_path / "summary.json"), "--quiet"]
    assert main(args) == 0
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())["scenarios"]
    events = [orjson.loads(x) for x in (tmp_path / "actions.jsonl").read_bytes().splitlines()]
    assert summary["by_scenario"] == tally(events) and summary["by_campaign"] == tally(events, "campaign")
    assert set(summary["by_scenario"]) == {"spring_day", "win_back_at_risk"}
    skipped = summary["skipped"]  # one action per 30 days; black_list labels; closed channels
    assert skipped["win_back_at_risk"]["contact_cap"] > 0 and skipped["spring_day"]["suppressed"] > 0
    assert skipped["spring_day"]["no_consent"] > 0
    with pytest.raises(SystemExit, match="drop --jobs"):
        main([*args, "--jobs", "2"])
