"""Parsing and validating a scenario file into :class:`rules.scenarios.Scenario` (the
shape is documented there and in docs/reference/scenarios.md)."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import cel

from rules import yamlines
from rules.calendar import to_epoch
from rules.celtext import LexError, free_identifiers, substitute, tokenize
from rules.errors import RuleSetError
from rules.metrics import CATALOGUE
from rules.scenario.model import (
    _ID,
    CENT,
    CHANNELS,
    OFFERS,
    UNITS,
    Action,
    Calendar,
    Expr,
    QuietHours,
    Scenario,
    Trigger,
    sample_context,
)

_TEMPLATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_TOP = {"scenario", "description", "source", "params", "trigger", "when", "action",
        "cooldown_days", "max_unanswered", "response_days", "expires_days", "quiet_hours",
        "valid_from", "valid_until", "max_age_hours", "campaign"}
_ACTION = {"offer", "reward", "floor", "cap", "unit", "channel", "template", "attributes"}
_TRIGGER = {"dimension", "entered", "left", "from", "to"}
_CALENDAR = {"on", "True", "yearly", "at", "dimension", "in"}  # YAML 1.1 reads a bare `on` as true


class Parser:
    def __init__(self, file: str, doc: yamlines.LineDict, version: str) -> None:
        self.file, self.doc, self.version = file, doc, version
        self.name: str | None = None
        self.params: dict[str, Any] = {}

    def fail(self, message: str, line: int | None) -> RuleSetError:
        return RuleSetError(message, self.file, line, self.name)

    def build(self) -> Scenario:
        doc = self.doc
        name = doc.get("scenario")
        if not isinstance(name, str) or not _ID.match(name):
            raise self.fail("'scenario' must be an id like win_back", doc.line_of("scenario"))
        self.name = name
        self._keys(doc, _TOP, "")
        self.params = self._params(doc.get("params"), doc.line_of("params"))
        trigger = self._trigger(doc.get("trigger"), doc.line_of("trigger"))
        when = None
        if doc.get("when") is not None:
            when = self._compile(doc["when"], "bool", doc.line_of("when"))
        action = self._action(doc.get("action"), doc.line_of("action"))
        response = self._int("response_days", 14, 1)
        quiet = self._quiet(doc.get("quiet_hours"), doc.line_of("quiet_hours"))
        valid_from, valid_until = self._instant("valid_from"), self._instant("valid_until")
        if valid_from is not None and valid_until is not None and valid_until <= valid_from:
            raise self.fail("valid_until must be after valid_from", doc.line_of("valid_until"))
        max_age = self._int("max_age_hours", None, 0)
        campaign = doc.get("campaign")
        if campaign is not None and (not isinstance(campaign, str) or not _ID.match(campaign)):
            raise self.fail("'campaign' must be an id like spring_2026", doc.line_of("campaign"))
        return Scenario(name, self.version, self.file, str(doc.get("description", "")).strip(),
                        self.params, trigger, when, action, self._int("cooldown_days", 0, 0),
                        self._int("max_unanswered", 0, 0, 10), response,
                        self._int("expires_days", response, 1), quiet, valid_from, valid_until,
                        max_age, doc.line, campaign)

    def _keys(self, raw: yamlines.LineDict, allowed: set[str], where: str) -> None:
        for key in raw:
            if key not in allowed:
                raise self.fail(f"unknown key {key!r}{where}; allowed: {', '.join(sorted(allowed))}",
                                raw.line_of(key))

    def _int(self, key: str, default: int | None, minimum: int, maximum: int = 100_000) -> Any:
        value = self.doc.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(f"{key} must be a whole number from {minimum} to {maximum}",
                            self.doc.line_of(key))
        return value

    def _params(self, raw: Any, line: int) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, yamlines.LineDict):
            raise self.fail("'params' must be a mapping", line)
        for key, value in raw.items():
            if not _ID.match(key) or key in CATALOGUE:
                raise self.fail(f"parameter name {key!r} is invalid or shadows a metric", raw.line_of(key))
            if not isinstance(value, (bool, int, float, str)):
                raise self.fail(f"parameter {key!r} must be a number, string or boolean", raw.line_of(key))
        return dict(raw)

    def _segments(self, raw: yamlines.LineDict, key: str, allow_none: bool = False) -> Any:
        value = raw.get(key)
        if value is None and key not in raw:
            return None
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(f"trigger '{key}' must name at least one segment", raw.line_of(key))
        for item in items:
            ok = (item is None and allow_none) or (isinstance(item, (str, int)) and not isinstance(item, bool))
            if not ok or item == "":
                raise self.fail(f"trigger '{key}' must be a segment id or a list of them"
                                + (" (null: no previous segment)" if allow_none else ""), raw.line_of(key))
        return tuple(item if item is None else str(item) for item in items)

    def _trigger(self, raw: Any, line: int) -> Trigger:
        if not isinstance(raw, yamlines.LineDict):
            raise self.fail("'trigger' must be a mapping with 'dimension' and 'entered' or 'left'", line)
        if {"on", "True", "yearly"} & set(raw):
            return self._calendar(raw)
        if "manual" in raw:  # {manual: true}: a one-off campaign (loyalty campaign fires it)
            if raw.get("manual") is not True or len(raw) != 1:
                raise self.fail("a campaign's trigger is exactly {manual: true}", raw.line)
            return Trigger("", line=raw.line, manual=True)
        self._keys(raw, _TRIGGER, " in trigger")
        dim = raw.get("dimension")
        if not isinstance(dim, str) or not _ID.match(dim):
            raise self.fail("trigger 'dimension' must be a dimension id", raw.line_of("dimension"))
        entered, left = self._segments(raw, "entered"), self._segments(raw, "left")
        if (entered is None) == (left is None):
            raise self.fail("a trigger has exactly one of 'entered' or 'left'", raw.line)
        if "from" in raw and entered is None:
            raise self.fail("'from' goes with 'entered' (use 'to' with 'left')", raw.line_of("from"))
        if "to" in raw and left is None:
            raise self.fail("'to' goes with 'left' (use 'from' with 'entered')", raw.line_of("to"))
        return Trigger(dim, entered or (), left or (), self._segments(raw, "from", True),
                       self._segments(raw, "to"), raw.line)

    def _calendar(self, raw: yamlines.LineDict) -> Trigger:
        """``{on: 2026-03-08 | yearly: "03-08", at: "10:00", dimension: gender, in: f}``."""
        self._keys(raw, _CALENDAR, " in a calendar trigger")
        key = "on" if "on" in raw else "True"
        on, yearly = raw.get(key), raw.get("yearly")
        if (on is None) == (yearly is None):
            raise self.fail("a calendar trigger has exactly one of 'on' (a date) or 'yearly' (\"MM-DD\")",
                            raw.line)
        if on is not None:
            if isinstance(on, str):
                try:
                    on = date.fromisoformat(on)
                except ValueError:
                    on = None
            if not isinstance(on, date) or isinstance(on, datetime):
                raise self.fail("'on' must be a date like 2026-03-08", raw.line_of(key))
        day = None
        if yearly is not None:
            m = _MMDD.match(yearly) if isinstance(yearly, str) else None
            if m is None or (int(m.group(1)), int(m.group(2))) in ((2, 30), (2, 31), (4, 31), (6, 31),
                                                                  (9, 31), (11, 31)):
                raise self.fail("'yearly' must be a quoted month and day like \"03-08\"", raw.line_of("yearly"))
            day = (int(m.group(1)), int(m.group(2)))
        at = 600
        if "at" in raw:
            hm = _HHMM.match(raw["at"]) if isinstance(raw["at"], str) else None
            if hm is None:
                raise self.fail("'at' must be a quoted local time like \"10:00\"", raw.line_of("at"))
            at = int(hm.group(1)) * 60 + int(hm.group(2))
        dim = raw.get("dimension", "")
        members = self._segments(raw, "in")
        if (dim == "") != (members is None):
            raise self.fail("a calendar trigger names both 'dimension' and 'in' (its segments), or neither",
                            raw.line_of("dimension" if dim else "in"))
        if dim and (not isinstance(dim, str) or not _ID.match(dim)):
            raise self.fail("trigger 'dimension' must be a dimension id", raw.line_of("dimension"))
        return Trigger(str(dim), line=raw.line, calendar=Calendar(on, day, at), members=members or ())

    def _money(self, raw: yamlines.LineDict, key: str) -> Decimal | None:
        value = raw.get(key)
        if value is None:
            return None
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InvalidOperation
            amount = Decimal(str(value))
            if not amount.is_finite() or amount < 0:
                raise InvalidOperation
        except InvalidOperation:
            raise self.fail(f"{key} must be a decimal amount >= 0, e.g. \"100.00\"", raw.line_of(key)) from None
        return amount.quantize(CENT, ROUND_HALF_UP)

    def _choice(self, raw: yamlines.LineDict, key: str, choices: tuple[str, ...], default: str | None) -> str:
        value = raw.get(key, default)
        if value not in choices:
            raise self.fail(f"action {key} must be one of {', '.join(choices)}", raw.line_of(key))
        return str(value)

    def _action(self, raw: Any, line: int) -> Action:
        if not isinstance(raw, yamlines.LineDict):
            raise self.fail("'action' must be a mapping with 'offer' and 'template'", line)
        self._keys(raw, _ACTION, " in action")
        offer = self._choice(raw, "offer", OFFERS, None)
        reward = None
        if raw.get("reward") is not None:
            reward = self._compile(raw["reward"], "number", raw.line_of("reward"))
        floor, cap = self._money(raw, "floor"), self._money(raw, "cap")
        if reward is None and (floor is not None or cap is not None):
            raise self.fail("floor and cap bound a reward: add 'reward'", raw.line_of("floor" if floor else "cap"))
        if floor is not None and cap is not None and floor > cap:
            raise self.fail(f"floor {floor} is above cap {cap}", raw.line_of("floor"))
        template = raw.get("template")
        if not isinstance(template, str) or not _TEMPLATE.match(template):
            raise self.fail("action 'template' must be a message template id", raw.line_of("template"))
        attributes = raw.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise self.fail("action 'attributes' must be a mapping", raw.line_of("attributes"))
        return Action(offer, reward, floor, cap, self._choice(raw, "unit", UNITS, "points"),
                      self._choice(raw, "channel", CHANNELS, "any"), template, _plain(attributes))

    def _quiet(self, raw: Any, line: int) -> QuietHours | None:
        if raw is None:
            return None
        if not isinstance(raw, yamlines.LineDict) or set(raw) != {"start", "end"}:
            raise self.fail("quiet_hours must be {start: \"HH:MM\", end: \"HH:MM\"}", line)
        minutes = []
        for key in ("start", "end"):
            m = _HHMM.match(raw[key]) if isinstance(raw[key], str) else None
            if m is None:
                raise self.fail(f"quiet_hours {key} must be a quoted time like \"22:00\"", raw.line_of(key))
            minutes.append(int(m.group(1)) * 60 + int(m.group(2)))
        return QuietHours(minutes[0], minutes[1])

    def _instant(self, key: str) -> int | None:
        value = self.doc.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise self.fail(f"{key} must be an instant with offset, e.g. 2026-01-01T00:00:00+03:00",
                            self.doc.line_of(key))
        return to_epoch(value)

    def _compile(self, source: Any, want: str, line: int) -> Expr:
        if isinstance(source, bool):  # YAML reads `when: true` as a boolean
            source = "true" if source else "false"
        if not isinstance(source, (str, int, float)) or isinstance(source, bool) or str(source).strip() == "":
            raise self.fail("an expression must be a non-empty string", line)
        source = str(source)
        try:
            tokens = tokenize(source)
        except LexError as exc:
            raise self.fail(f"syntax error: {exc}", line) from None
        names: list[str] = []
        for _, tok in free_identifiers(tokens):
            if tok.text in self.params:
                continue
            if tok.text not in CATALOGUE:
                raise self.fail(f"unknown metric {tok.text!r} (see the metric catalogue)", line)
            names.append(tok.text)
        map_keys: dict[str, list[str]] = {}
        for i, tok in free_identifiers(tokens):
            if tok.text in CATALOGUE and CATALOGUE[tok.text].type == "map" and i + 2 < len(tokens) \
                    and tokens[i + 1].text == "[" and tokens[i + 2].kind == "str":
                map_keys.setdefault(tok.text, []).append(tokens[i + 2].text.lstrip("rRbB")[1:-1])
        text = substitute(tokens, self.params)
        try:
            program = cel.compile(text)
        except ValueError as exc:
            raise self.fail(f"syntax error: {str(exc).splitlines()[0]}", line) from None
        expr = Expr(source, text, program, tuple(dict.fromkeys(names)),
                    {k: tuple(v) for k, v in map_keys.items()}, line)
        try:
            result = program.execute(sample_context(expr))
        except (TypeError, RuntimeError, ValueError) as exc:
            raise self.fail(f"type error: {str(exc).splitlines()[0]}", line) from None
        if want == "bool" and not isinstance(result, bool):
            raise self.fail(f"a condition must be boolean, got {type(result).__name__}", line)
        if want == "number" and (isinstance(result, bool) or not isinstance(result, (int, float))):
            raise self.fail(f"a reward must be a number, got {type(result).__name__}", line)
        return expr


def _plain(value: Any) -> Any:
    """YAML values as JSON-ready values (dates become ISO text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
