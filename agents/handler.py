"""What an agent does with one message, without Faust: decode, call the core, encode.

The Faust agents in :mod:`agents.pipeline` only move bytes between Kafka, the tables and
this module, so the same code is unit-tested here and runs in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.population import Rounds, held_key, held_pack, held_unpack
from agents.scenario_hooks import calendar_before, calendar_due
from agents.watermark import WATERMARK
from app.wire import codecs
from rules import ClientState, Engine, Outcome, RejectedInput, loads, parse_profile, parse_receipt
from rules.calendar import to_epoch
from rules.inputs.communications import Communication, parse_communication
from rules.inputs.receipts import Profile, Receipt, known_profile_fields
from rules.record.state import archive_add, archive_key, initialize
from rules.record.state import dumps as dump_state
from rules.record.state import loads as load_state
from rules.scenario_state import ScenarioRunner, Step
from rules.scenario_state import dumps as dump_scenarios
from rules.scenario_state import loads as load_scenarios


@dataclass
class Handled:
    kind: str  # receipt | profile | communication | tick
    outcome: str  # applied | duplicate | anonymous | profile | communication | tick
    value: bytes | None = None  # new table value (None: leave the table alone)
    due_old: int | None = None
    due_new: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    occurred_at: datetime | None = None
    scenarios: Step = field(default_factory=Step)  # scenario actions/conversions it caused
    archive: dict[bytes, bytes] = field(default_factory=dict)  # archive keys -> new values
    facts: list[dict[str, Any]] = field(default_factory=list)  # receipt facts (period reports)

    @property
    def actions(self) -> list[dict[str, Any]]:
        """Scenario events to publish (actions, conversions, then responses and revenue)."""
        return self.scenarios.events


def route(raw: bytes, kind: bytes, now: datetime,
          earliest: int | None = None) -> tuple[str | None, bytes, int | None]:
    """Validate an input message; return (client id or None if anonymous, envelope, event
    time in epoch s or None if it has none).

    Raises RejectedInput for bad input (the caller sends it to the DLQ).
    """
    doc = loads(raw)
    if kind == codecs.RECEIPT:
        receipt = parse_receipt(doc, now, earliest)
        return receipt.client_id, codecs.envelope(kind, raw), receipt.at
    if kind == codecs.COMMUNICATION:
        comm = parse_communication(doc, now, earliest)
        return comm.client_id, codecs.envelope(kind, raw), comm.at
    profile = parse_profile(doc, now, earliest)
    at = None if profile.updated_at is None else to_epoch(profile.updated_at)
    return profile.client_id, codecs.envelope(kind, known_profile_fields(raw)), at


class ClientHandler:
    """Applies one client-events message to the stored value of that client.

    With a scenario runner, the scenarios run here too, in the order a client's input
    arrives: the receipt, then the segment changes it causes (time-based ones first). Their
    state is part of the client's table value, so a redelivered message meets the state it
    met the first time and gives the same actions (same ids).
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime],
                 scenarios: ScenarioRunner | None = None, rounds: Rounds | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.scenarios = scenarios
        self.rounds = rounds  # population rounds (agents.population): inputs may be held

    def handle(self, client_id: str, message: bytes, stored: bytes | None,
               read: Callable[[bytes], bytes | None] | None = None) -> Handled:
        """``read``: the table's value of another key (the client's archive, rules.record.state;
        its held inputs, agents.population)."""
        if self.rounds is None or message[:1] in (codecs.PROBE, WATERMARK):
            return self._one(client_id, message, stored, read)
        return self._with_held(client_id, message, stored, read)

    def _with_held(self, client_id: str, message: bytes, stored: bytes | None,
                   read: Callable[[bytes], bytes | None] | None) -> Handled:
        """Hold an input dated at or after the open population round; apply the held inputs
        the last round released (in event-time order) before this message."""
        assert self.rounds is not None
        key = held_key(client_id.encode())
        local: dict[bytes, bytes] = {}

        def overlay(k: bytes) -> bytes | None:
            return local[k] if k in local else (read(k) if read is not None else None)

        held = held_unpack(overlay(key))
        bound = self.rounds.hold_from
        at = _event_time(message)
        hold = at is not None and at >= bound
        ready = sorted((h for h in held if h[0] < bound), key=lambda h: h[0])
        keep = [h for h in held if h[0] >= bound] + ([(at, message)] if hold and at is not None else [])
        if not ready and not hold and not held:
            return self._one(client_id, message, stored, read)
        done: list[Handled] = []
        value = stored
        for _, m in ready:
            out = self._one(client_id, m, value, overlay)
            local.update(out.archive)
            value = out.value if out.value is not None else value
            done.append(out)
        if hold:
            main = Handled(_KINDS.get(message[:1], "profile"), "held")
            if value is None:  # a record to sweep when the round is over
                value = codecs.table_value(None, dump_state(initialize(client_id)), None,
                                           self.engine.fingerprint)
            main.value = value
            main.due_new = codecs.table_due(value)
        else:
            main = self._one(client_id, message, value, overlay)
            if main.value is None and value is not None and value is not stored:  # only released ones wrote
                main.value, main.due_new = value, codecs.table_due(value)
        main.events = [e for out in done for e in out.events] + main.events
        main.facts = [f for out in done for f in out.facts] + main.facts
        steps = [out.scenarios for out in done] + [main.scenarios]
        main.scenarios.actions = [a for st in steps for a in st.actions]
        main.scenarios.conversions = [c for st in steps for c in st.conversions]
        main.scenarios.outcomes = [o for st in steps for o in st.outcomes]
        main.scenarios.skipped = [k for st in steps for k in st.skipped]
        archive: dict[bytes, bytes] = {}
        for out in [*done, main]:
            archive.update(out.archive)
        main.archive = archive
        main.archive[key] = held_pack(keep)
        main.due_old = codecs.table_due(stored) if stored is not None else None
        return main

    def _one(self, client_id: str, message: bytes, stored: bytes | None,
             read: Callable[[bytes], bytes | None] | None = None) -> Handled:
        if message[:1] in (codecs.PROBE, WATERMARK):
            return Handled("probe", "probe")  # its only job: be a later record (agents.monitor)
        if message[:1] == codecs.CAMPAIGN:
            return self._campaign(message, stored)
        due_old, state = None, None
        if stored is not None:
            due_old, raw_state = codecs.split_table_value(stored)
            state = load_state(raw_state)
        kind = message[:1]
        receipt: Receipt | None = None
        profile: Profile | None = None
        comm: Communication | None = None
        if kind == codecs.RECEIPT:
            receipt = parse_receipt(loads(message[1:]), None)  # validated when routed
        elif kind == codecs.PROFILE:
            profile = parse_profile(loads(message[1:]), None)
        elif kind == codecs.COMMUNICATION:
            comm = parse_communication(loads(message[1:]), None)
        # calendar scenarios due by this message's instant first, each at its own instant
        cal = calendar_before(self, state, stored, message, receipt, profile, comm)
        # a client behind a population snapshot dated before its input catches up first, so
        # scenarios see the snapshot's changes before the receipt (as in replay)
        pre: list[dict[str, Any]] = []
        if state is not None and self.engine.snapshots and (receipt or profile or comm) is not None:
            at = receipt.at if receipt is not None else comm.at if comm is not None else state.clock
            if profile is not None and profile.updated_at is not None:
                at = to_epoch(profile.updated_at)
            pre = self.engine.catch_up(state, at)
        if receipt is not None:
            archived = None
            if read is not None:
                def archived(month: int) -> bytes | None:
                    return read(archive_key(client_id, month))
            result = self.engine.receipt(state, receipt, archived)
            out = Handled("receipt", result.outcome.value, occurred_at=receipt.occurred_at)
            if result.outcome is Outcome.APPLIED and result.state is not None:
                out.facts.append(self.engine.fact(result.state, receipt))
            for month, (sales, rets) in result.archive.items():
                key = archive_key(client_id, month)
                out.archive[key] = archive_add(read(key) if read is not None else None, sales, rets)
            if result.outcome is Outcome.DUPLICATE:
                return out
        elif profile is not None:
            result = self.engine.profile(state, profile)
            out = Handled("profile", "profile")
        elif comm is not None:
            result = self.engine.communication(state, comm)
            out = Handled("communication", result.outcome.value, occurred_at=comm.occurred_at)
            if result.outcome is Outcome.DUPLICATE:
                return out
        elif kind == codecs.TICK:
            if state is None:
                return Handled("tick", "tick")
            assert stored is not None
            until = codecs.tick_until(message)
            now = to_epoch(self.clock()) if until is None else until
            # evaluated by other rules: this tick is the sweep after a rules change
            fire = self.engine.reevaluate if self.stale(stored) else self.engine.advance
            events = fire(state, now)
            out = Handled("tick", "tick", events=events)
            result = None
        else:
            raise RejectedInput("bad_envelope", f"unknown message kind {kind!r}")
        if result is not None:
            state = result.state
            out.events = pre + result.events
        assert state is not None
        due_new = self.engine.next_due(state)
        scenarios = codecs.scenario_part(stored) if stored is not None else None
        if cal is not None:
            scenarios = cal.scenarios
        if self.scenarios is not None:
            scenarios = self._scenarios(scenarios, receipt, out, len(pre), state, comm)
        if cal is not None:
            cal.merge(out)
        due_new = calendar_due(self.scenarios, scenarios, state, due_new)
        out.value = codecs.table_value(due_new, dump_state(state), scenarios, self.engine.fingerprint)
        out.due_old, out.due_new = due_old, due_new
        return out

    def _campaign(self, message: bytes, stored: bytes | None) -> Handled:
        """A one-off campaign for this client (app.batch.campaign): decided by the scenario
        runner against the client's current segments and scenario state."""
        out = Handled("campaign", "campaign")
        if stored is None or self.scenarios is None:
            return out  # not a client (any more), or no scenarios here: nothing to send
        doc = loads(message[1:])
        due, raw_state = codecs.split_table_value(stored)
        part = codecs.scenario_part(stored)
        scen, step = self.scenarios.campaign(
            load_scenarios(part) if part is not None else None, load_state(raw_state), str(doc["scenario"]),
            str(doc["campaign"]), str(doc["dimension"]), str(doc["segment"]), int(doc["at"]),
            to_epoch(self.clock()))
        out.scenarios = step
        if step.changed and scen is not None:
            out.value = codecs.table_value(due, raw_state, dump_scenarios(scen), codecs.table_rules(stored))
            out.due_old = out.due_new = due
        return out

    def stale(self, stored: bytes) -> bool:
        """True if a table value was written under other rules (an old value without a
        fingerprint counts as written under these: an upgrade alone sweeps nothing)."""
        rules = codecs.table_rules(stored)
        return rules is not None and rules != self.engine.fingerprint

    def _scenarios(self, stored: bytes | None, receipt: Receipt | None, out: Handled,
                   first: int = 0, client: ClientState | None = None,
                   comm: Communication | None = None) -> bytes | None:
        """Feed the scenario runner (the first ``first`` changes, then the receipt, then the
        other changes); return the new scenario state (bytes) of the client."""
        runner = self.scenarios
        assert runner is not None
        matching = [(n, e) for n, e in enumerate(out.events) if runner.matching(e["data"])]
        if receipt is None and comm is None and not matching:
            return stored
        state = load_scenarios(stored) if stored is not None else None
        total, changed = out.scenarios, False
        now = to_epoch(self.clock())
        for _, event in [*[m for m in matching if m[0] < first], (first, None),
                         *[m for m in matching if m[0] >= first]]:
            if event is None:  # the receipt's place
                if comm is not None:  # a response answers actions (rules.scenario_state)
                    state, step = runner.communication(state, comm)
                    total.outcomes += step.outcomes
                    changed = changed or step.changed
                if receipt is not None:
                    state, step = runner.receipt(state, receipt)
                    total.conversions += step.conversions
                    total.outcomes += step.outcomes
                    changed = changed or step.changed
                continue
            state, step = runner.change(state, event, now, client=client)
            total.actions += step.actions
            total.conversions += step.conversions
            total.outcomes += step.outcomes
            total.skipped += step.skipped
            changed = changed or step.changed
        if state is None or not changed:
            return stored
        return dump_scenarios(state)


_KINDS = {codecs.RECEIPT: "receipt", codecs.PROFILE: "profile", codecs.COMMUNICATION: "communication"}


def _event_time(message: bytes) -> int | None:
    """Event time of a receipt, a communication or a profile with ``updated_at`` (None:
    other messages)."""
    kind = message[:1]
    if kind == codecs.RECEIPT:
        return parse_receipt(loads(message[1:]), None).at
    if kind == codecs.COMMUNICATION:
        return parse_communication(loads(message[1:]), None).at
    if kind == codecs.PROFILE:
        profile = parse_profile(loads(message[1:]), None)
        return None if profile.updated_at is None else to_epoch(profile.updated_at)
    return None
