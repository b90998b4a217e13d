"""Metrics of the client's profile (registered into :data:`rules.metrics.CATALOGUE`).

They read ``state.profile`` (:func:`rules.record.state.apply_profile`). Personal ones (a name,
labels, custom attributes) are marked ``personal``: rules read them, change events do not
carry them.

**Countdowns** (kind ``countdown``): ``days_until_birthday`` is the number of business days
from today (in the business time zone) to the next birthday, 0 on the birthday itself, -1
when the birth date is unknown. It steps down by one at every business midnight and jumps
back up (to 364 or 365) at the start of the day after the birthday. Someone born on 29
February celebrates on **28 February** in common years (``age``, a legal count, steps up on
1 March there). ``days_until_child_birthday`` is the smallest countdown over the children
(-1 with none), ``days_until_spouse_birthday`` the spouse's.

A comparison ``days_until_birthday <= 7`` flips at the start of the business day 7 days
before the birthday and at the start of the day after it: :func:`countdown_instants` lists
those instants for :meth:`rules.evaluate.Plan.candidates`, so ``next_due`` is exact.

**Attributes** (``attributes``, a map of client-defined keys to strings, numbers or
booleans): ``attributes["pet"]`` or ``attributes.pet`` reads a value, ``has(attributes.pet)``
(or ``"pet" in attributes``) tests that the client has it. A key the client lacks is left
missing (reading it is a CEL error: the condition does not match), so guard reads with
``has()``. Values have no static type: a rule type-checks when some scalar type of the keys
it names makes it run (:func:`typecheck_contexts`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from rules.calendar import DAY_S, BusinessCalendar
from rules.celtext import Token, free_identifiers
from rules.metrics.base import CATALOGUE, MetricView, _add
from rules.record.state import ClientState

#: How far past the last other candidate countdown instants are listed. One date compared
#: with steps up to 364 repeats the same truth values every cycle between two birthdays: two
#: cycles show them all. Several dates (a family: their alignment moves with leap days) or a
#: step past 364 (365 days to go: only in a cycle with a 29 February): 12 years, every pattern
#: (the non-leap 2100 included) recurs within them.
COUNTDOWN_HORIZON_S = 12 * 366 * DAY_S
SHORT_HORIZON_S = 2 * 366 * DAY_S + DAY_S
_SCALARS = ("x", 1, 1.5, True)  # a sample of each type an attribute value may have
_MAX_COMBINATIONS = 3  # keys typed in every combination; beyond, one type for all
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # business day numbers (rules.calendar)


def celebrated(born: date, year: int) -> date:
    """The day of ``year`` on which a birthday of ``born`` is celebrated (29 February: 28
    February in common years)."""
    if born.month == 2 and born.day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        return date(year, 2, 28)
    return born.replace(year=year)


_BIRTHDAYS: dict[tuple[int, int, int], int] = {}


def _birthday_day(month: int, day: int, year: int) -> int:
    """Business day number of the birthday ``month``/``day`` celebrated in ``year`` (memoized)."""
    key = (month, day, year)
    found = _BIRTHDAYS.get(key)
    if found is None:
        if len(_BIRTHDAYS) > 200_000:
            _BIRTHDAYS.clear()
        found = _BIRTHDAYS[key] = celebrated(date(2000, month, day), year).toordinal() - _EPOCH_ORDINAL
    return found


def days_until(born: date, today: date) -> int:
    """Days from ``today`` to the next celebrated birthday (0: today)."""
    day = celebrated(born, today.year)
    if day < today:
        day = celebrated(born, today.year + 1)
    return (day - today).days


def _dates(*keys: str) -> Callable[[ClientState], list[date]]:
    def dates(s: ClientState) -> list[date]:
        out = []
        for key in keys:
            value = s.profile.get(key)
            for text in value if isinstance(value, list) else [value] if value else []:
                out.append(date.fromisoformat(text))
        return out

    return dates


#: countdown metric -> the dates of the client it counts down to (birth dates)
COUNTDOWNS: dict[str, Callable[[ClientState], list[date]]] = {
    "days_until_birthday": _dates("birth_date"),
    "days_until_child_birthday": _dates("children"),
    "days_until_spouse_birthday": _dates("spouse_birth_date"),
}


def _countdown(name: str) -> Callable[[MetricView], int]:
    dates = COUNTDOWNS[name]

    def fn(v: MetricView) -> int:
        found = dates(v.s)
        if not found:
            return -1
        today = v.cal.date_of_day(v.day)
        return min(days_until(born, today) for born in found)

    return fn


def countdown_instants(state: ClientState, steps: dict[str, set[int]], after: int, until: int,
                       cal: BusinessCalendar, settled: int) -> set[int]:
    """Instants in (after, until] at which a comparison of a countdown metric with one of its
    ``steps`` may flip (a step ``s``: the comparison differs between ``s - 1`` and ``s``, see
    ``rules.evaluate._threshold_steps``): the start of the day the countdown reaches ``s - 1``
    (``s - 1`` days before a birthday) and of the day after each birthday (the jump back up).
    For the smallest of several countdowns, the union of each one's instants. ``settled``:
    the instant after which no other rule input changes; instants are listed up to a horizon
    past it (:data:`COUNTDOWN_HORIZON_S`), beyond which nothing new can happen."""
    dates = {name: {(b.month, b.day) for b in COUNTDOWNS[name](state)} for name in steps}
    dates = {name: found for name, found in dates.items() if found}
    if not dates:
        return set()
    single = len(dates) == 1 and all(len(f) == 1 and max(steps[n]) <= 364 for n, f in dates.items())
    until = min(until, settled + (SHORT_HORIZON_S if single else COUNTDOWN_HORIZON_S))
    first, last = cal.day(after) + 1, cal.day(until)
    if first > last:
        return set()
    years = range(cal.date_of_day(first).year - 1, cal.date_of_day(last).year + 2)
    days: set[int] = set()
    for name, found in dates.items():
        offsets = (-1, *sorted({s - 1 for s in steps[name] if 1 <= s <= 366}))
        for month, day in found:
            for year in years:
                birthday = _birthday_day(month, day, year)
                days.update(birthday - offset for offset in offsets)
    out = (cal.day_start(d) for d in days if first <= d <= last)
    return {c for c in out if after < c <= until}


def _attribute_keys(tokens: list[Token]) -> list[tuple[str, str]]:
    """(metric, key) a source names of a dynamic map: ``m.key``, ``m['key']``, ``has(m.key)``."""
    found: list[tuple[str, str]] = []
    for i, tok in free_identifiers(tokens):
        metric = CATALOGUE.get(tok.text)
        if metric is None or not metric.dynamic or i + 2 >= len(tokens):
            continue
        nxt, key = tokens[i + 1], tokens[i + 2]
        if nxt.text == "." and key.kind == "ident":
            found.append((tok.text, key.text))
        elif nxt.text == "[" and key.kind == "str" and i + 3 < len(tokens) and tokens[i + 3].text == "]":
            found.append((tok.text, key.text.lstrip("rRbB")[1:-1]))
    return list(dict.fromkeys(found))


def typecheck_contexts(tokens: list[Token], ctx: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Contexts to type-check an expression with: ``ctx`` itself unless it reads a dynamic
    map (``attributes``); then the keys it names given each combination of scalar types (one
    type for all beyond 3 keys), and last none of them."""
    keys = _attribute_keys(tokens)
    if not keys:
        return [ctx]
    if len(keys) <= _MAX_COMBINATIONS:
        typings: Iterable[tuple[Any, ...]] = itertools.product(_SCALARS, repeat=len(keys))
    else:
        typings = (tuple([sample] * len(keys)) for sample in _SCALARS)
    out = []
    for typing in [*typings, None]:
        variant = {**ctx, **{metric: {} for metric, _ in keys}}
        if typing is not None:
            for (metric, key), sample in zip(keys, typing, strict=True):
                variant[metric][key] = sample
        out.append(variant)
    return out


_add("first_name", "string", "static", lambda v: v.s.profile.get("first_name", ""),
     "first name (profile), '' if unknown; personal: not in change events", personal=True)
_add("labels", "list", "static", lambda v: list(v.s.profile.get("labels", [])),
     "colour labels, black and VIP lists (profile labels, e.g. 'vip_list' in labels); personal: "
     "not in change events", personal=True)
_add("attributes", "map", "static", lambda v: dict(v.s.profile.get("attributes", {})),
     "custom fields (profile attributes): attributes['pet'] or attributes.pet, a string, number or "
     "boolean (a date is a 'YYYY-MM-DD' string); a key the client lacks is missing: test it with "
     "has(attributes.pet); personal: not in change events", personal=True, dynamic=True)
_add("legal_entity", "bool", "static", lambda v: v.s.profile.get("legal_entity") is True,
     "a company, not a person (profile legal_entity; false if unknown)")
_add("has_app", "bool", "static", lambda v: "app_registered_at" in v.s.profile,
     "registered in the mobile app (profile app_registered_at known)")
_add("has_discount_card", "bool", "static", lambda v: "discount_card" in v.s.profile,
     "holds a discount card (profile discount_card known)")
for _name, _doc in (
    ("days_until_birthday", "business days until the next birthday (profile birth_date), 0 on the day"),
    ("days_until_child_birthday", "business days until the nearest birthday of a child (profile "
     "children), 0 on the day"),
    ("days_until_spouse_birthday", "business days until the spouse's birthday (profile "
     "spouse_birth_date), 0 on the day"),
):
    _add(_name, "int", "countdown", _countdown(_name),
         _doc + "; -1 if unknown; 29 February is celebrated on 28 February in common years; "
         "personal (with the event's time it tells the day of birth): not in change events",
         personal=True)
