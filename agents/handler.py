"""What an agent does with one message, without Faust: decode, call the core, encode.

The Faust agents in :mod:`agents.pipeline` only move bytes between Kafka, the tables and
this module, so the same code is unit-tested here and runs in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import codecs
from rules import Engine, Outcome, RejectedInput, loads, parse_profile, parse_receipt
from rules.calendar import to_epoch
from rules.state import dumps as dump_state
from rules.state import loads as load_state


@dataclass
class Handled:
    kind: str  # receipt | profile | tick
    outcome: str  # applied | duplicate | anonymous | profile | tick
    value: bytes | None = None  # new table value (None: leave the table alone)
    due_old: int | None = None
    due_new: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    occurred_at: datetime | None = None


def route(raw: bytes, kind: bytes, now: datetime) -> tuple[str | None, bytes]:
    """Validate an input message; return (client id or None if anonymous, envelope).

    Raises RejectedInput for bad input (the caller sends it to the DLQ).
    """
    doc = loads(raw)
    if kind == codecs.RECEIPT:
        receipt = parse_receipt(doc, now)
        return receipt.client_id, codecs.envelope(kind, raw)
    profile = parse_profile(doc, now)
    return profile.client_id, codecs.envelope(kind, raw)


class ClientHandler:
    """Applies one client-events message to the stored value of that client."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock

    def handle(self, client_id: str, message: bytes, stored: bytes | None) -> Handled:
        due_old, state = None, None
        if stored is not None:
            due_old, raw_state = codecs.split_table_value(stored)
            state = load_state(raw_state)
        kind = message[:1]
        if kind == codecs.RECEIPT:
            receipt = parse_receipt(loads(message[1:]), None)  # validated when routed
            result = self.engine.receipt(state, receipt)
            out = Handled("receipt", result.outcome.value, occurred_at=receipt.occurred_at)
            if result.outcome is Outcome.DUPLICATE:
                return out
        elif kind == codecs.PROFILE:
            result = self.engine.profile(state, parse_profile(loads(message[1:]), None))
            out = Handled("profile", "profile")
        elif kind == codecs.TICK:
            if state is None:
                return Handled("tick", "tick")
            events = self.engine.advance(state, to_epoch(self.clock()))
            out = Handled("tick", "tick", events=events)
            result = None
        else:
            raise RejectedInput("bad_envelope", f"unknown message kind {kind!r}")
        if result is not None:
            state = result.state
            out.events = result.events
        assert state is not None
        due_new = self.engine.next_due(state)
        out.value = codecs.table_value(due_new, dump_state(state))
        out.due_old, out.due_new = due_old, due_new
        return out
