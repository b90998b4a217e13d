"""Calendar triggers: a scenario that fires on a date (``on: 2026-03-08``) or every year
(``yearly: "03-08"``) at a local time of the business time zone (``at``, default 10:00),
for the clients in a segment at that instant (``dimension`` + ``in``; without them, every
client), e.g. 8 March for ``gender`` segment ``f``, or Tatyana's day (25 January) for the
clients whose ``first_name`` is Tatyana (a ``when`` condition). A ``yearly: "02-29"``
fires in leap years only.

Exactness, the same in replay and the stream: a client's calendar occurrences are decided
in time order with its other inputs. Before the worker (or replay) applies a message dated
``t`` (a tick: up to its ``until``), :func:`catch_up` takes every occurrence ``C`` in
(cursor, t], in order: it advances the engine to ``C`` (the time-based changes due by then,
fed to the runner like any others), decides the calendar scenarios due at ``C`` with the
client's record as of ``C`` (its segments then, every metric at ``C``), and moves the
cursor (:attr:`rules.scenario.record.ClientScenarios.calendar`) to ``t``. An occurrence at
the instant of an input comes before it. The client's next due instant includes
:func:`next_calendar` (its next occurrence of a scenario whose segment it is in now; a
segment change is itself a due instant, so nothing is missed), so the due scanner ticks it
then. A client first seen after an occurrence is not offered it; an input dated before an
occurrence that has fired, arriving late, does not make it fire again.

Cost: every client's scenario state keeps the cursor (~10 bytes) once a calendar scenario
is loaded; a client is ticked at an occurrence only if it is in the scenario's segment and
its ``when`` holds on the profile (when ``when`` reads profile fields only).
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rules.calendar import to_epoch
from rules.metrics import MetricView
from rules.record.state import ClientState
from rules.scenario.model import Calendar, Scenario
from rules.scenario.record import ClientScenarios, Step

if TYPE_CHECKING:
    from rules.engine import Engine
    from rules.scenario_state import ScenarioRunner

#: Profile metrics that change only with a profile update (a message): a ``when`` reading
#: only these is tested when the next occurrence is scheduled.
STATIC_PROFILE = frozenset({"first_name", "last_name", "gender", "city", "tags", "labels", "has_profile",
                            "attributes", "legal_entity", "has_app", "has_discount_card"})
_YEARS_AHEAD = 9  # a 29 February recurs within 8 years


def instant(day: date, minutes: int, tz: ZoneInfo) -> int:
    return to_epoch(datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=tz))


def next_occurrence(cal: Calendar, after: int, tz: ZoneInfo) -> int | None:
    """The first occurrence strictly after ``after`` (None: none, e.g. a date in the past)."""
    if cal.on is not None:
        t = instant(cal.on, cal.at, tz)
        return t if t > after else None
    assert cal.yearly is not None
    month, day = cal.yearly
    year = datetime.fromtimestamp(after, tz).year
    for y in range(year, year + _YEARS_AHEAD):
        if (month, day) == (2, 29) and not (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
            continue
        t = instant(date(y, month, day), cal.at, tz)
        if t > after:
            return t
    return None


def _next(s: Scenario, after: int, tz: ZoneInfo) -> int | None:
    assert s.trigger.calendar is not None
    t = next_occurrence(s.trigger.calendar, after, tz)
    if t is None or (s.valid_until is not None and t >= s.valid_until):
        return None
    return t


def member(s: Scenario, client: ClientState) -> bool:
    """Is the client in the scenario's segment now (any client without a segment)?"""
    trig = s.trigger
    if not trig.dimension:
        return True
    seg = client.segments.get(trig.dimension)
    return seg is not None and str(seg[0]) in trig.members


def _may_hold(runner: ScenarioRunner, s: Scenario, client: ClientState, at: int) -> bool:
    """False if ``when`` reads only profile fields and is false on them now."""
    when = s.when
    if when is None or not set(when.names) <= STATIC_PROFILE:
        return True
    view = MetricView(client, at, runner.cal, runner.models_at(at))
    try:
        ctx: dict[str, Any] = {n: view.cel(n) for n in when.names}
        return when.program.execute(ctx) is True
    except (TypeError, RuntimeError, ValueError, KeyError):
        return True  # decided (as an error) when it fires


def cursor(state: ClientScenarios | None, client: ClientState) -> int:
    """Occurrences up to this instant are decided."""
    return max(state.calendar if state is not None else 0, client.clock)


def next_calendar(runner: ScenarioRunner, state: ClientScenarios | None, client: ClientState,
                  after: int | None = None) -> int | None:
    """The client's next calendar occurrence after ``after`` (default: its cursor) of a
    scenario whose segment it is in now and whose profile-only ``when`` holds; None: none."""
    after = cursor(state, client) if after is None else after
    if not runner.calendars or after <= 0:
        return None
    best: int | None = None
    for s in runner.calendars:
        if not member(s, client):
            continue
        t = _next(s, after, runner.tz)
        if t is not None and (best is None or t < best) and _may_hold(runner, s, client, after):
            best = t
    return best


def next_any(runner: ScenarioRunner, after: int) -> int | None:
    """The next occurrence of any calendar scenario after ``after``, whoever the client.
    Memoized on the runner: for every ``after`` in [lo, t) it is t (inputs come in time
    order, so most calls hit the last interval)."""
    memo = runner._next_any
    if memo is not None and memo[0] <= after and (memo[1] is None or after < memo[1]):
        return memo[1]
    found = min((t for s in runner.calendars if (t := _next(s, after, runner.tz)) is not None), default=None)
    runner._next_any = (after, found)
    return found


def due_at(runner: ScenarioRunner, client: ClientState, at: int) -> list[Scenario]:
    """The calendar scenarios with an occurrence at ``at`` whose segment the client is in."""
    return [s for s in runner.calendars if _next(s, at - 1, runner.tz) == at and member(s, client)]


def catch_up(engine: Engine, runner: ScenarioRunner, client: ClientState, state: ClientScenarios | None,
             until: int, now: int | None = None) -> tuple[list[dict[str, Any]], ClientScenarios | None, Step]:
    """Decide the client's calendar occurrences in (cursor, ``until``], each with the
    client's record as of its instant (see the module docstring). Returns the change events
    the engine made on the way (already fed to the runner: the caller publishes them), the
    scenario state and what the runner decided. Call it before applying a message dated
    ``until`` (a tick: up to its ``until``)."""
    events: list[dict[str, Any]] = []
    step = Step()
    if not runner.calendars:
        return events, state, step
    after = cursor(state, client)
    if after <= 0:  # a client with no instant yet: nothing before its first input
        after = until
    while True:
        c = next_any(runner, after)
        if c is None or c > until:
            break
        changes = engine.advance(client, c)
        for event in changes:
            state, s = runner.change(state, event, now, client=client)
            step.add(s)
        events += changes
        state, s = runner.calendar(state, client, c, now)
        step.add(s)
        after = c
    state = state or ClientScenarios(client.client_id)
    if state.calendar < until:
        state.calendar = until
        step.changed = True
    return events, state, step
