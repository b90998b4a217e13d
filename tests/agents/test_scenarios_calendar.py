"""Calendar scenarios in the clients handler: the next occurrence is the client's due
instant, a tick then decides it (once, the same ids when redelivered), and a message dated
after an occurrence decides it first when no tick came."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from agents.handler import ClientHandler
from app.wire import codecs
from rules import Engine, load_ruleset
from rules.calendar import iso, to_epoch
from rules.scenario.policy import ContactPolicy
from rules.scenario_state import ScenarioRunner
from rules.scenarios import loads

MARCH_8 = to_epoch(datetime.fromisoformat("2026-03-08T10:00:00+03:00"))
WOMEN_DAY = loads("""scenario: women_day
trigger: {yearly: "03-08", at: "10:00", dimension: gender, in: f}
action: {offer: gift, reward: "200", channel: sms, template: march8_v1}
""", "women_day.yaml")


def _handler(now: list[int]) -> ClientHandler:
    runner = ScenarioRunner([WOMEN_DAY], tz="Europe/Moscow", policy=ContactPolicy())
    engine = Engine([load_ruleset("demographics")], tz="Europe/Moscow")
    return ClientHandler(engine, lambda: datetime.fromtimestamp(now[0], UTC), runner)


def _msg(kind: bytes, doc: dict[str, object]) -> bytes:
    return codecs.envelope(kind, orjson.dumps(doc))


def _client(handler: ClientHandler, cid: str, gender: str) -> bytes:
    stored = handler.handle(cid, _msg(codecs.PROFILE, {"client_id": cid, "gender": gender,
                                                        "updated_at": "2026-02-01T09:00:00+03:00"}), None).value
    out = handler.handle(cid, _msg(codecs.RECEIPT, {"receipt_id": f"{cid}-1", "client_id": cid, "type": "sale",
                                                    "occurred_at": "2026-02-02T12:00:00+03:00", "total": "500.00"}),
                         stored)
    assert out.value is not None
    return out.value


def test_the_occurrence_is_the_due_instant_and_a_tick_decides_it() -> None:
    now = [MARCH_8 - 86_400]
    handler = _handler(now)
    anna, boris = _client(handler, "anna", "f"), _client(handler, "boris", "m")
    assert codecs.table_due(anna) == MARCH_8
    due = codecs.table_due(boris)
    assert due is None or due > MARCH_8  # not in f: no tick for it
    now[0] = MARCH_8 + 5
    out = handler.handle("anna", codecs.tick(MARCH_8, MARCH_8 + 1), anna)
    assert [(a["data"]["scenario"], a["time"], a["data"]["reward"]) for a in out.actions] == [
        ("women_day", iso(MARCH_8), "200.00")]
    assert out.value is not None and codecs.table_due(out.value) == MARCH_8 + 365 * 86_400
    again = handler.handle("anna", codecs.tick(MARCH_8, MARCH_8 + 1), anna)  # redelivered
    assert [a["id"] for a in again.actions] == [a["id"] for a in out.actions]
    assert handler.handle("anna", codecs.tick(MARCH_8, MARCH_8 + 60), out.value).actions == []  # decided once


def test_a_later_message_decides_a_missed_occurrence_before_itself() -> None:
    now = [MARCH_8 - 86_400]
    handler = _handler(now)
    anna = _client(handler, "anna", "f")
    now[0] = MARCH_8 + 3600
    out = handler.handle("anna", _msg(codecs.RECEIPT, {
        "receipt_id": "anna-2", "client_id": "anna", "type": "sale",
        "occurred_at": "2026-03-08T10:30:00+03:00", "total": "800.00"}), anna)
    assert [a["type"] for a in out.actions] == ["loyalty.scenario.action", "loyalty.scenario.converted",
                                                "loyalty.scenario.revenue"]
    assert out.actions[2]["data"]["amount"] == "800.00"
    now[0] = MARCH_8 + 4 * 86_400  # processed four days late: past the default 72 hours
    late = handler.handle("anna", codecs.tick(MARCH_8, MARCH_8 + 86_400), anna)
    assert late.actions == [] and late.scenarios.skipped == [("women_day", "stale")]


def test_deploying_a_calendar_scenario_sweeps_the_stored_clients_onto_its_date() -> None:
    """A client stored before the scenario was deployed has no due instant for the date; the
    worker's fingerprint folds the calendar scenarios in, so the sweep ticks it once and its
    due instant becomes the occurrence."""
    from agents.scenarios import calendar_fingerprint

    now = [MARCH_8 - 10 * 86_400]
    before = ClientHandler(Engine([load_ruleset("demographics")], tz="Europe/Moscow"),
                           lambda: datetime.fromtimestamp(now[0], UTC))
    anna = _client(before, "anna", "f")
    assert codecs.table_due(anna) != MARCH_8
    after = _handler(now)
    after.engine.fingerprint = calendar_fingerprint(after.engine.fingerprint, after.scenarios)
    assert after.engine.fingerprint != before.engine.fingerprint
    assert after.stale(anna)  # the sweep's tick for it
    out = after.handle("anna", codecs.tick(now[0], now[0]), anna)
    assert out.value is not None and codecs.table_due(out.value) == MARCH_8
    assert not after.stale(out.value) and out.events == []  # same rules: no change event
    assert calendar_fingerprint(b"12345678", None) == b"12345678"
