"""Population rounds without Kafka: holding inputs dated after the open round, releasing
them after it, merging partials (agents/population.py, agents/handler.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from agents.handler import ClientHandler
from agents.population import Rounds, held_key, held_pack, held_unpack, partial_doc
from app.wire import codecs
from rules import Engine, load_ruleset
from rules.calendar import to_epoch

DAY1 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def receipt(rid: str, at: datetime, total: str, client: str = "c-1") -> bytes:
    return codecs.envelope(codecs.RECEIPT, orjson.dumps({
        "receipt_id": rid, "client_id": client, "occurred_at": at.isoformat(), "type": "sale",
        "total": total}))


class Table(dict[bytes, bytes]):
    """A client's table values as the clients agent would write them."""

    def apply(self, client: str, out: Any) -> None:
        self.update(out.archive)
        if out.value is not None:
            self[client.encode()] = out.value


def _setup() -> tuple[Engine, Rounds, ClientHandler, Table]:
    engine = Engine([load_ruleset("abc"), load_ruleset("boostfeel")])
    rounds = Rounds.create(engine, "day", 2, 0)
    assert rounds is not None
    rounds.pending = to_epoch(DAY1 + timedelta(days=1))
    return engine, rounds, ClientHandler(engine, lambda: DAY1, None, rounds), Table()


def test_held_rows_round_trip() -> None:
    rows = [(5, b"R{}"), (-1, b""), (2**40, b"x" * 300)]
    assert held_unpack(held_pack(rows)) == rows and held_unpack(None) == [] and held_unpack(b"") == []


def test_inputs_after_the_open_round_are_held_then_released_in_event_time_order() -> None:
    engine, rounds, h, table = _setup()
    early = h.handle("c-1", receipt("a", DAY1 + timedelta(hours=10), "100.00"), None, table.get)
    table.apply("c-1", early)
    assert [e["data"]["dimension"] for e in early.events] == ["boostfeel"]  # abc waits for a snapshot
    later = [receipt("c", DAY1 + timedelta(days=1, hours=9), "50.00"),
             receipt("b", DAY1 + timedelta(days=1, hours=8), "70.00")]
    for m in later:
        out = h.handle("c-1", m, table[b"c-1"], table.get)
        assert out.outcome == "held" and out.events == []
        table.apply("c-1", out)
    assert [t for t, _ in held_unpack(table[held_key(b"c-1")])] == [
        to_epoch(DAY1 + timedelta(days=1, hours=9)), to_epoch(DAY1 + timedelta(days=1, hours=8))]
    # partials of both partitions: this client in partition 0, nobody in partition 1
    doc0 = partial_doc(engine.spec, engine, rounds.pending, 0, 2, table.items(), rounds.pending + 86_400,
                       lambda v: codecs.split_table_value(v)[1])
    assert doc0["agg"]["clients"] == 1 and doc0["floor"] == to_epoch(DAY1 + timedelta(days=1, hours=8))
    doc1 = partial_doc(engine.spec, engine, rounds.pending, 1, 2, [], rounds.pending + 99, lambda v: v)
    assert rounds.receive(b"partial:0", orjson.loads(orjson.dumps(doc0))) is None
    done = rounds.receive(b"partial:1", doc1)
    assert done is not None and done["snapshot"]["clients"] == 1
    assert rounds.last == to_epoch(DAY1 + timedelta(days=1)) and rounds.pending == rounds.last + 86_400
    assert engine.population is not None and engine.population.values["a_min"] == 100.0
    # the sweep tick: the snapshot's change at its instant, then the held receipts by time
    swept = h.handle("c-1", codecs.tick(rounds.last, rounds.last), table[b"c-1"], table.get)
    got = [(e["data"]["dimension"], e["data"]["cause"], e["data"].get("receipt_id")) for e in swept.events]
    assert got == [("abc", "population", None)]  # a: 100 of 100 is the top 80%; b and c change nothing
    assert swept.events[0]["time"] == "2026-03-03T00:00:00Z"
    table.apply("c-1", swept)
    assert held_unpack(table[held_key(b"c-1")]) == []
    state = orjson.loads(codecs.split_table_value(table[b"c-1"])[1])
    assert state["o"] == rounds.last and state["n"][1] == 22000  # 100 + 70 + 50, in cents


def test_a_round_record_from_another_worker_is_applied_once() -> None:
    engine, rounds, _, _ = _setup()
    doc = {"kind": "round", "instant": rounds.pending, "next": rounds.pending + 86_400,
           "snapshot": {"values": {"a_min": 5.0, "b_min": 1.0}, "clients": 3, "version": "x"}}
    assert rounds.receive(b"round", doc) is None
    assert engine.population is not None and engine.population.clients == 3
    assert rounds.receive(b"round", doc) is None and rounds.pending == doc["next"]
    # a partial of a later round read before its round record is kept for that round
    later = {"kind": "partial", "instant": doc["next"] + 86_400, "partition": 0, "partitions": 2,
             "agg": {}, "floor": 0}
    rounds.receive(b"partial:0", later)
    rounds.apply({"kind": "round", "instant": doc["next"], "next": doc["next"] + 86_400, "snapshot": None})
    assert rounds.has_partial(0) and not rounds.has_partial(1)


def test_an_empty_round_moves_to_the_cadence_instant_after_the_earliest_held_input() -> None:
    engine = Engine([load_ruleset("abc")])
    rounds = Rounds.create(engine, "day", 1, 0)
    assert rounds is not None and rounds.pending == 86_400  # 1970-01-02
    first = to_epoch(DAY1 + timedelta(hours=15))
    doc = {"kind": "partial", "instant": rounds.pending, "partition": 0, "partitions": 1,
           "agg": {"clients": 0, "exponent": 0, **{k: {} for k in engine.spec.parts}}, "floor": first}
    done = rounds.receive(b"partial:0", doc)
    assert done is not None and done["snapshot"] is None
    assert rounds.pending == to_epoch(DAY1 + timedelta(days=1)) and engine.population is None
