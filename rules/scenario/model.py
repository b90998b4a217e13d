"""The scenario model: the classes a scenario file is parsed into (:mod:`rules.scenarios`
documents the file; :mod:`rules.scenario.parser` builds these)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from rules.metrics import CATALOGUE, SAMPLES

#: Lifetime figures the scenario state keeps from every receipt (the change events of most
#: dimensions do not carry them). Same meaning as the catalogue metrics of the same name.
LEDGER_METRICS = ("lifetime_value", "lifetime_revenue", "lifetime_visits", "avg_check")
OFFERS = ("bonus", "cashback", "discount", "free_visit", "gift", "status", "reminder")
UNITS = ("points", "currency", "percent")
CHANNELS = ("any", "push", "sms", "email", "messenger", "call")
#: Metrics read from the client's record (its profile), not from the change event: a
#: scenario's ``when`` may read those the catalogue defines (e.g. ``"vip_list" in labels``,
#: ``first_name == "Tatyana"``). They are the record's values when the trigger is processed.
CLIENT_METRICS = ("labels", "first_name", "last_name", "gender", "city", "tags", "has_profile",
                  "age", "consent", "unsubscribed")
CENT = Decimal("0.01")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    text: str  # after parameter substitution
    program: Any
    names: tuple[str, ...]  # catalogue metrics read
    map_keys: dict[str, tuple[str, ...]]
    line: int


@dataclass(frozen=True, slots=True)
class Calendar:
    """A calendar occurrence: one date (``on``) or every year (``yearly``), at a local time
    of the business time zone."""

    on: date | None = None
    yearly: tuple[int, int] | None = None  # (month, day)
    at: int = 600  # minutes after local midnight

    def label(self) -> str:
        if self.on is not None:
            return self.on.isoformat()
        assert self.yearly is not None
        return f"{self.yearly[0]:02d}-{self.yearly[1]:02d}"


@dataclass(frozen=True, slots=True)
class Trigger:
    dimension: str
    entered: tuple[str, ...] = ()  # exactly one of entered / left is set
    left: tuple[str, ...] = ()
    from_: tuple[str | None, ...] | None = None  # with entered; None in the list: no previous segment
    to: tuple[str, ...] | None = None  # with left
    line: int = 0

    calendar: Calendar | None = None  # a calendar trigger (no change event fires it)
    members: tuple[str, ...] = ()  # calendar: segments of ``dimension`` to be in (empty: any client)
    manual: bool = False  # a one-off campaign's scenario: only ``loyalty campaign`` fires it

    def matches(self, data: dict[str, Any]) -> bool:
        """Does a ``loyalty.segment.changed`` event's data fire this trigger?"""
        if self.calendar is not None or self.manual or data.get("dimension") != self.dimension:
            return False
        frm, to = data.get("from"), data.get("to")
        if self.entered:
            return to in self.entered and (self.from_ is None or frm in self.from_)
        return frm in self.left and (self.to is None or to in self.to)

    def segments(self) -> tuple[str, ...]:
        named = (*self.entered, *self.left, *(self.from_ or ()), *(self.to or ()), *self.members)
        return tuple(s for s in named if s is not None)


@dataclass(frozen=True, slots=True)
class Action:
    offer: str
    reward: Expr | None
    floor: Decimal | None
    cap: Decimal | None
    unit: str
    channel: str
    template: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: int  # minutes after local midnight, business time zone
    end: int  # actions due from start to end are sent at end (see scenario_state.send_instant)


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    version: str
    path: str
    description: str
    params: dict[str, Any]
    trigger: Trigger
    when: Expr | None
    action: Action
    cooldown_days: int
    max_unanswered: int  # 0: no cap
    response_days: int
    expires_days: int
    quiet_hours: QuietHours | None = None
    valid_from: int | None = None
    valid_until: int | None = None
    max_age_hours: int | None = None  # None: the contact policy's default; 0: no limit
    line: int = 1
    campaign: str | None = None

    def names(self) -> tuple[str, ...]:
        """Every metric the scenario's expressions read."""
        exprs = [e for e in (self.when, self.action.reward) if e is not None]
        return tuple(dict.fromkeys(n for e in exprs for n in e.names))

    def summary(self) -> str:
        t = self.trigger
        if t.calendar is not None:
            who = f" for {t.dimension} in {'|'.join(t.members)}" if t.members else ""
            when = f"{t.calendar.label()} {t.calendar.at // 60:02d}:{t.calendar.at % 60:02d}"
            how = f"on {when}{who}" if t.calendar.on else f"every {when}{who}"
            return f"{how} -> {self.action.offer} via {self.action.channel}"
        how = f"entered {'|'.join(t.entered)}" if t.entered else f"left {'|'.join(t.left)}"
        return f"{t.dimension} {how} -> {self.action.offer} via {self.action.channel}"


def sample_context(expr: Expr) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    for n in expr.names:
        sample = SAMPLES[CATALOGUE[n].type]
        if CATALOGUE[n].type == "map":
            sample = {**sample, **dict.fromkeys(expr.map_keys.get(n, ()), 0.5)}
        ctx[n] = sample
    return ctx
