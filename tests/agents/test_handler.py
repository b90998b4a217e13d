"""The agents' per-message logic, without Faust or Kafka (agents/handler.py), and the
clients agent itself through Faust's test_context()."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.due_index import stored_dues
from agents.handler import ClientHandler, route
from app.settings import Settings
from app.wire import codecs
from rules import Engine, RejectedInput, load_ruleset
from rules.calendar import to_epoch

NOW = datetime(2026, 6, 15, tzinfo=UTC)


def receipt(rid: str, at: datetime, total: str = "300.00", client: str | None = "c-1") -> bytes:
    return orjson.dumps({"receipt_id": rid, "client_id": client, "occurred_at": at.isoformat(),
                         "type": "sale", "total": total})


def handler() -> ClientHandler:
    return ClientHandler(Engine([load_ruleset("boostfeel")]), lambda: NOW)


def test_route_validates_and_keys_by_client() -> None:
    client, env, _ = route(receipt("r1", NOW), codecs.RECEIPT, NOW)
    assert client == "c-1" and env[:1] == codecs.RECEIPT
    assert route(receipt("r2", NOW, client=None), codecs.RECEIPT, NOW)[0] is None
    with pytest.raises(RejectedInput) as info:
        route(b"{nope", codecs.RECEIPT, NOW)
    assert info.value.reason == "invalid_json"


def test_receipt_then_duplicate_then_tick() -> None:
    h = handler()
    bought = NOW - timedelta(days=25)
    out = h.handle("c-1", codecs.envelope(codecs.RECEIPT, receipt("r1", bought)), None)
    assert out.value is not None and [e["data"]["to"] for e in out.events] == ["other"]
    # potentially_loyal is due 7 days after the purchase
    assert out.due_new == to_epoch(bought) + 7 * 86_400 and out.due_old is None
    dup = h.handle("c-1", codecs.envelope(codecs.RECEIPT, receipt("r1", bought)), out.value)
    assert dup.outcome == "duplicate" and dup.value is None and dup.events == []
    tick = h.handle("c-1", codecs.tick(out.due_new), out.value)
    assert [(e["data"]["to"], e["time"]) for e in tick.events] == [
        ("potentially_loyal", (bought + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("at_risk", (bought + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    assert tick.due_old == out.due_new and tick.due_new == to_epoch(bought) + 40 * 86_400


def test_tick_for_unknown_client_is_ignored() -> None:
    out = handler().handle("ghost", codecs.tick(0), None)
    assert out.value is None and out.events == []


def test_table_value_round_trip() -> None:
    value = codecs.table_value(123, b"state")
    assert codecs.split_table_value(value) == (123, b"state")
    assert codecs.split_table_value(codecs.table_value(None, b"s")) == (None, b"s")
    with_scenarios = codecs.table_value(123, b'{"v":1}', b'{"c":"x"}')
    assert codecs.split_table_value(with_scenarios) == (123, b'{"v":1}')
    assert codecs.scenario_part(with_scenarios) == b'{"c":"x"}'
    assert codecs.scenario_part(value) is None
    newline_in_due = codecs.table_value(10, b"{}", b"[]")  # due 10 is b"\n" in its 8 bytes
    assert codecs.split_table_value(newline_in_due) == (10, b"{}") and codecs.scenario_part(newline_in_due) == b"[]"


def _memory_app(tmp_path: Path, **env: str) -> tuple[Any, Any]:
    """The real Faust app with the memory store, ready for ``agent.test_context()``. No
    scenarios: their actions would go to a real actions topic (a broker); no receipt facts
    either, for the same reason (tests/integration/test_period_report.py has them)."""
    from app.stream.faust_app import create_app

    settings = Settings.from_env({"LOYALTY_STORE": "memory://", "LOYALTY_DATA_DIR": str(tmp_path),
                                  "LOYALTY_RULES": "boostfeel", "LOYALTY_CLOCK": NOW.isoformat(),
                                  "REDIS_URL": "redis://127.0.0.1:1/0", "LOYALTY_SCENARIOS": "none",
                                  "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "LOYALTY_TOPIC_FACTS": "none",
                                  **env})
    app, pipeline = create_app(settings)
    app.finalize()
    app.flow_control.resume()
    return app, pipeline


async def test_clients_agent_with_test_context(tmp_path: Path) -> None:
    """The real clients agent, driven by Faust's test_context (memory store, no broker)."""
    app, pipeline = _memory_app(tmp_path, LOYALTY_BATCH_MAX="1")
    agent = app.agents["clients"]
    sent: list[tuple[Any, Any]] = []

    async def capture(*, key: Any = None, value: Any = None, **_: Any) -> Any:
        sent.append((key, value))
        acked = asyncio.get_running_loop().create_future()  # what the agent awaits before writing
        acked.set_result(None)
        return acked

    pipeline.changes.send = capture  # the output topic: captured instead of produced
    pipeline.direct_sends = False  # through Topic.send, which the test captures
    async with agent.test_context() as ctx:
        bought = NOW - timedelta(days=3)
        await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r1", bought)), key=b"c-1", partition=0)
        await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r1", bought)), key=b"c-1", partition=0)
        stored = pipeline.clients[b"c-1"]
        due, _ = codecs.split_table_value(stored)
        assert due == to_epoch(bought) + 7 * 86_400
        assert list(stored_dues(pipeline.clients, 0)) == [(b"c-1", due)]  # what the index is built from
    assert [orjson.loads(v)["data"]["to"] for _, v in sent] == ["other"]  # duplicate: no event
    assert sent[0][0] == b"c-1"


async def test_clients_agent_batch_sees_its_own_pending_state(tmp_path: Path) -> None:
    """Two receipts of one client in one batch: the second is applied to the first's result,
    the events are sent before the table writes, and one due entry is left."""
    app, pipeline = _memory_app(tmp_path, LOYALTY_BATCH_MAX="3", LOYALTY_BATCH_WITHIN="0.2")
    agent = app.agents["clients"]
    order: list[str] = []

    async def capture(*, key: Any = None, value: Any = None, **_: Any) -> Any:
        order.append("send:" + orjson.loads(value)["data"]["to"])
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked

    pipeline.changes.send = capture
    pipeline.direct_sends = False
    clients = pipeline.clients
    original_set = type(clients).__setitem__

    def recording_set(self: Any, key: Any, value: Any) -> None:
        order.append("write")
        original_set(self, key, value)

    async with agent.test_context() as ctx:
        type(clients).__setitem__ = recording_set
        try:
            first, second = NOW - timedelta(days=30), NOW - timedelta(days=2)
            await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r1", first)), key=b"c-1", partition=0)
            await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r2", second)), key=b"c-1", partition=0)
            await ctx.put(codecs.envelope(codecs.RECEIPT, receipt("r3", second, client="c-2")),
                          key=b"c-2", partition=0)  # the third message fills the batch
            for _ in range(50):
                if b"c-1" in pipeline.clients.data:
                    break
                await asyncio.sleep(0.05)
        finally:
            type(clients).__setitem__ = original_set
    due, raw = codecs.split_table_value(pipeline.clients[b"c-1"])
    from rules.record.state import loads as load_state

    assert load_state(raw).visits == 2  # the second receipt saw the first one's state
    assert dict(stored_dues(pipeline.clients, 0))[b"c-1"] == due
    sends = [i for i, o in enumerate(order) if o.startswith("send:")]
    writes = [i for i, o in enumerate(order) if o == "write"]
    assert sends and writes and max(sends) < min(writes)  # every change acked before any write


def test_table_values_carry_the_rules_fingerprint_and_old_values_still_read() -> None:
    value = codecs.table_value(1_700_000_000, b'{"v":1}', b'{"s":2}', b"\n" * 8)
    assert codecs.table_rules(value) == b"\n" * 8  # newlines in the fingerprint: no confusion
    assert codecs.split_table_value(value) == (1_700_000_000, b'{"v":1}')
    assert codecs.scenario_part(value) == b'{"s":2}'
    old = codecs.table_value(1_700_000_000, b'{"v":1}', b'{"s":2}')  # an earlier version's
    assert old[:1] == b"\x00" and codecs.table_rules(old) is None
    assert codecs.split_table_value(old) == (1_700_000_000, b'{"v":1}')
    assert codecs.scenario_part(old) == b'{"s":2}'
    assert codecs.table_due(codecs.table_value(None, b"{}", None, b"12345678")) is None
    with pytest.raises(ValueError):
        codecs.table_value(None, b"{}", None, b"short")


def test_a_tick_after_a_rules_change_re_evaluates_under_the_new_rules() -> None:
    old = handler()
    bought = NOW - timedelta(days=12)
    first = old.handle("c-1", codecs.envelope(codecs.RECEIPT, receipt("r1", bought)), None)
    assert first.value is not None
    assert codecs.table_rules(first.value) == old.engine.fingerprint
    assert [e["data"]["to"] for e in first.events] == ["other"]
    # the business lowers at_risk from 20 to 10 days and redeploys
    new = ClientHandler(Engine([load_ruleset("boostfeel", {"at_risk_days": 10})]), lambda: NOW)
    assert new.engine.fingerprint != old.engine.fingerprint and new.stale(first.value)
    assert not old.stale(first.value)
    assert dict(stored_dues(_Table(first.value), 0, new.engine.fingerprint)) == {b"c-1": 1}
    assert dict(stored_dues(_Table(first.value), 0, old.engine.fingerprint)) == {b"c-1": first.due_new}
    tick = new.handle("c-1", codecs.tick(1), first.value)
    assert [(e["data"]["from"], e["data"]["to"], e["data"]["cause"], e["time"]) for e in tick.events] == [
        ("other", "at_risk", "rules", NOW.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    assert tick.events[0]["data"]["rules_version"] == new.engine.rulesets[0].version
    assert tick.value is not None and not new.stale(tick.value)
    assert tick.due_new == to_epoch(bought) + 40 * 86_400  # lost, under the new rules
    # the same tick under unchanged rules fires the time-based changes as usual
    same = old.handle("c-1", codecs.tick(1), first.value)
    assert [e["data"]["cause"] for e in same.events] == ["time"]  # potentially_loyal at day 7


def test_an_old_table_value_is_not_swept() -> None:
    h = handler()
    out = h.handle("c-1", codecs.envelope(codecs.RECEIPT, receipt("r1", NOW - timedelta(days=3))), None)
    assert out.value is not None
    due, state = codecs.split_table_value(out.value)
    old = codecs.table_value(due, state)  # as an earlier version wrote it
    assert not h.stale(old)
    assert dict(stored_dues(_Table(old), 0, b"whatever")) == {b"c-1": due}


class _Table:
    """A clients table with one value in the memory store (what stored_dues reads)."""

    def __init__(self, value: bytes) -> None:
        self.data = {b"c-1": value}


def communication(eid: str, at: datetime, event: str = "sent", client: str = "c-1") -> bytes:
    return orjson.dumps({"event_id": eid, "client_id": client, "occurred_at": at.isoformat(),
                         "channel": "email", "event": event})


def test_communications_are_routed_applied_deduplicated_and_due() -> None:
    h = ClientHandler(Engine([load_ruleset("netix_contact")]), lambda: NOW)
    sent = NOW - timedelta(days=10)
    client, env, at = route(communication("e1", sent), codecs.COMMUNICATION, NOW)
    assert (client, env[:1], at) == ("c-1", codecs.COMMUNICATION, to_epoch(sent))
    with pytest.raises(RejectedInput) as info:
        route(orjson.dumps({"event_id": "e2", "client_id": "c-1", "occurred_at": sent.isoformat(),
                            "channel": "pigeon", "event": "sent"}), codecs.COMMUNICATION, NOW)
    assert info.value.reason == "unknown_channel"
    out = h.handle("c-1", env, None)
    assert (out.kind, out.outcome) == ("communication", "applied")
    assert [e["data"]["to"] for e in out.events] == ["contacted_month"]  # no purchase: clients all
    assert out.due_new == to_epoch(sent) + 31 * 86_400
    dup = h.handle("c-1", env, out.value)
    assert (dup.outcome, dup.value, dup.events) == ("duplicate", None, [])


def test_a_campaign_message_decides_the_campaign_for_a_stored_member(tmp_path: Path) -> None:
    from app.batch.campaign import message
    from rules.scenario.policy import ContactPolicy
    from rules.scenario_state import ScenarioRunner
    from rules.scenarios import loads as load_scenario

    spring = load_scenario("scenario: spring\ncampaign: spring_2026\ntrigger: {manual: true}\n"
                           "action: {offer: gift, channel: sms, template: spring_v1}\n")
    h = ClientHandler(Engine([load_ruleset("boostfeel")]), lambda: NOW,
                      ScenarioRunner([spring], policy=ContactPolicy()))
    stored = h.handle("c-1", codecs.envelope(codecs.RECEIPT, receipt("r1", NOW - timedelta(days=2))), None).value
    assert stored is not None
    at = to_epoch(NOW)
    out = h.handle("c-1", message("spring", "k-1", "boostfeel", "other", at), stored)
    assert [a["data"]["scenario"] for a in out.actions] == ["spring"] and out.value is not None
    assert codecs.table_due(out.value) == codecs.table_due(stored)  # the record is not touched
    assert codecs.split_table_value(out.value)[1] == codecs.split_table_value(stored)[1]
    again = h.handle("c-1", message("spring", "k-1", "boostfeel", "other", at), out.value)
    assert again.actions == [] and again.scenarios.skipped == [("spring", "duplicate")]
    assert h.handle("c-2", message("spring", "k-1", "boostfeel", "other", at), None).actions == []
