"""Calendar scenarios in the clients handler (:mod:`agents.handler`), kept out of it.

Before a client's message is applied, :func:`calendar_before` decides the calendar
occurrences due by the message's instant (a receipt's, a communication's, a profile's
``updated_at``, a tick's ``until``), each with the client's record as of its instant
(:func:`rules.scenario.calendar.catch_up`: the engine is advanced to the occurrence first,
exactly what a tick then would do). The changes made on the way go out before the
message's own, with the actions. :func:`calendar_due` folds the client's next occurrence
into the due instant stored with its record, so the due scanner ticks it then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.wire import codecs
from rules.calendar import to_epoch
from rules.inputs.communications import Communication
from rules.inputs.receipts import Profile, Receipt
from rules.record.state import ClientState
from rules.scenario.calendar import catch_up
from rules.scenario.record import Step
from rules.scenario.record import dumps as dump_scenarios
from rules.scenario.record import loads as load_scenarios
from rules.scenario_state import ScenarioRunner

if TYPE_CHECKING:
    from agents.handler import ClientHandler, Handled


@dataclass
class CalendarPre:
    events: list[dict[str, Any]]  # changes the engine made up to the occurrences
    scenarios: bytes | None  # the client's scenario state after them
    step: Step  # what the runner decided (those changes' and the occurrences')

    def merge(self, out: Handled) -> None:
        """Put the changes and decisions first in what the message gives."""
        out.events = self.events + out.events
        self.step.add(out.scenarios)
        out.scenarios = self.step


def horizon(handler: ClientHandler, state: ClientState, stored: bytes, message: bytes,
            receipt: Receipt | None, profile: Profile | None, comm: Communication | None) -> int | None:
    """The instant up to which the message brings the client (None: nothing to decide)."""
    if receipt is not None:
        return receipt.at
    if comm is not None:
        return comm.at
    if profile is not None:
        return state.clock if profile.updated_at is None else to_epoch(profile.updated_at)
    if message[:1] == codecs.TICK and not handler.stale(stored):  # a sweep: decided after it
        until = codecs.tick_until(message)
        return to_epoch(handler.clock()) if until is None else until
    return None


def calendar_before(handler: ClientHandler, state: ClientState | None, stored: bytes | None, message: bytes,
                    receipt: Receipt | None = None, profile: Profile | None = None,
                    comm: Communication | None = None) -> CalendarPre | None:
    runner = handler.scenarios
    if runner is None or not runner.calendars or state is None or stored is None:
        return None
    until = horizon(handler, state, stored, message, receipt, profile, comm)
    if until is None:
        return None
    raw = codecs.scenario_part(stored)
    before = load_scenarios(raw) if raw is not None else None
    events, after, step = catch_up(handler.engine, runner, state, before, until, to_epoch(handler.clock()))
    return CalendarPre(events, dump_scenarios(after) if after is not None and step.changed else raw, step)


def calendar_due(runner: ScenarioRunner | None, scenarios: bytes | None, state: ClientState,
                 due: int | None) -> int | None:
    """``due`` or the client's next calendar occurrence, whichever comes first."""
    if runner is None or not runner.calendars:
        return due
    nxt = runner.next_calendar(load_scenarios(scenarios) if scenarios is not None else None, state)
    return nxt if due is None or (nxt is not None and nxt < due) else due
