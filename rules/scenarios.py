"""Scenarios: actions triggered by segment changes (win-back, welcome bonus, VIP status...).

A scenario is one YAML file (presets in ``rules/scenarios/``; loading the file is the
caller's job, this module only parses text, so the core stays free of I/O)::

    scenario: win_back_at_risk
    description: ...                  # free text; presets quote the seed they reproduce
    params: {margin: 0.3, ltv_share: 0.05}
    trigger: {dimension: boostfeel, entered: at_risk}   # or left: [...]; optional from / to
    when: "lifetime_visits >= 2"      # eligibility (CEL), optional
    action:
      offer: bonus                    # bonus | cashback | discount | free_visit | gift | status | reminder
      reward: "margin * (avg_check + ltv_share * lifetime_value)"   # CEL number, optional
      floor: "100.00"                 # Decimal bounds of the reward, optional
      cap: "1500.00"
      unit: points                    # points | currency | percent
      channel: push                   # a hint: any | push | sms | email | call
      template: winback_at_risk_v1    # message template id
      attributes: {cashback_percent: 5}   # passed through to the action
    cooldown_days: 30                 # per client: no new action of this scenario sooner
    max_unanswered: 3                 # stop after this many consecutive unconverted attempts (0: no cap)
    response_days: 14                 # a purchase within this many days converts the action
    expires_days: 14                  # the offer's validity (action data.expires_at)
    quiet_hours: {start: "22:00", end: "09:00"}   # business time zone; actions move to the end
    valid_from: 2026-01-01T00:00:00+03:00          # campaign window, optional
    valid_until: 2026-12-31T00:00:00+03:00
    max_age_hours: 48                 # skip triggers older than this when processed, optional

Expressions see the catalogue metrics the change event carries in ``data.metrics`` (money
as doubles in major units, like rules) plus four lifetime figures kept by the scenario
state from every receipt (:data:`LEDGER_METRICS`), and the scenario's params.

Reward: the CEL result (a double) becomes a ``Decimal`` rounded half-up to 2 places, then
is raised to ``floor`` and lowered to ``cap`` (both Decimal). The win-back default
(``win_back_at_risk``): ``margin * (avg_check + ltv_share * lifetime_value)``, margin 0.3,
ltv_share 0.05, 100..1500 bonus points (1 point = 1 currency unit): the margin of one
average visit plus a share of the client's lifetime value. Worked examples (avg check,
LTV -> reward): 400, 12000 -> 0.3 * (400 + 600) = 300.00; 250, 2500 -> 112.50;
200, 1000 -> 75.00 -> 100.00 (floor); 1500, 90000 -> 1800.00 -> 1500.00 (cap).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import cel

from rules import yamlines
from rules.calendar import to_epoch
from rules.celtext import LexError, free_identifiers, substitute, tokenize
from rules.errors import RuleSetError
from rules.metrics import CATALOGUE, SAMPLES
from rules.ruleset import RuleSet

#: Lifetime figures the scenario state keeps from every receipt (the change events of most
#: dimensions do not carry them). Same meaning as the catalogue metrics of the same name.
LEDGER_METRICS = ("lifetime_value", "lifetime_revenue", "lifetime_visits", "avg_check")
OFFERS = ("bonus", "cashback", "discount", "free_visit", "gift", "status", "reminder")
UNITS = ("points", "currency", "percent")
CHANNELS = ("any", "push", "sms", "email", "call")
CENT = Decimal("0.01")
_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TEMPLATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_TOP = {"scenario", "description", "source", "params", "trigger", "when", "action",
        "cooldown_days", "max_unanswered", "response_days", "expires_days", "quiet_hours",
        "valid_from", "valid_until", "max_age_hours"}
_ACTION = {"offer", "reward", "floor", "cap", "unit", "channel", "template", "attributes"}
_TRIGGER = {"dimension", "entered", "left", "from", "to"}


@dataclass(frozen=True, slots=True)
class Expr:
    source: str
    text: str  # after parameter substitution
    program: Any
    names: tuple[str, ...]  # catalogue metrics read
    map_keys: dict[str, tuple[str, ...]]
    line: int


@dataclass(frozen=True, slots=True)
class Trigger:
    dimension: str
    entered: tuple[str, ...] = ()  # exactly one of entered / left is set
    left: tuple[str, ...] = ()
    from_: tuple[str | None, ...] | None = None  # with entered; None in the list: no previous segment
    to: tuple[str, ...] | None = None  # with left
    line: int = 0

    def matches(self, data: dict[str, Any]) -> bool:
        """Does a ``loyalty.segment.changed`` event's data fire this trigger?"""
        if data.get("dimension") != self.dimension:
            return False
        frm, to = data.get("from"), data.get("to")
        if self.entered:
            return to in self.entered and (self.from_ is None or frm in self.from_)
        return frm in self.left and (self.to is None or to in self.to)

    def segments(self) -> tuple[str, ...]:
        named = (*self.entered, *self.left, *(self.from_ or ()), *(self.to or ()))
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
    max_age_hours: int | None = None
    line: int = 1

    def names(self) -> tuple[str, ...]:
        """Every metric the scenario's expressions read."""
        exprs = [e for e in (self.when, self.action.reward) if e is not None]
        return tuple(dict.fromkeys(n for e in exprs for n in e.names))

    def summary(self) -> str:
        t = self.trigger
        how = f"entered {'|'.join(t.entered)}" if t.entered else f"left {'|'.join(t.left)}"
        return f"{t.dimension} {how} -> {self.action.offer} via {self.action.channel}"


def loads(text: str, file: str = "<string>") -> Scenario:
    """Parse and validate one scenario; RuleSetError names the file, line and scenario."""
    doc = yamlines.load_mapping(text, file, "scenario")
    return _Parser(file, doc, hashlib.sha256(text.encode()).hexdigest()[:12]).build()


def check_against(scenario: Scenario, rulesets: list[RuleSet]) -> None:
    """Validate a scenario against the loaded rule sets: its dimension exists, its segments
    are that dimension's, and every metric it reads is carried by that dimension's events."""
    where = {d.id: d for rs in rulesets for d in rs.dimensions}
    trig = scenario.trigger
    dim = where.get(trig.dimension)
    fail = _failer(scenario.path, scenario.id)
    if dim is None:
        raise fail(f"dimension {trig.dimension!r} is not defined by the loaded rule sets "
                   f"({', '.join(sorted(where)) or 'none'})", trig.line)
    if dim.value is None:
        known = {s.id for s in dim.segments} | ({dim.default} if dim.default else set())
        for seg in trig.segments():
            if seg not in known:
                raise fail(f"dimension {dim.id!r} has no segment {seg!r} "
                           f"(segments: {', '.join(sorted(known))})", trig.line)
    carried = set(dim.metrics) | set(LEDGER_METRICS)
    for expr in (scenario.when, scenario.action.reward):
        missing = [n for n in (expr.names if expr else ()) if n not in carried]
        if expr is not None and missing:
            raise fail(f"reads {', '.join(missing)}, which {dim.id} change events do not carry "
                       f"(they carry {', '.join(sorted(carried))})", expr.line)


def _failer(file: str, rule: str | None) -> Callable[[str, int | None], RuleSetError]:
    def fail(message: str, line: int | None) -> RuleSetError:
        return RuleSetError(message, file, line, rule)

    return fail


class _Parser:
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
        max_age = self._int("max_age_hours", None, 1)
        return Scenario(name, self.version, self.file, str(doc.get("description", "")).strip(),
                        self.params, trigger, when, action, self._int("cooldown_days", 0, 0),
                        self._int("max_unanswered", 0, 0, 10), response,
                        self._int("expires_days", response, 1), quiet, valid_from, valid_until,
                        max_age, doc.line)

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


def sample_context(expr: Expr) -> dict[str, Any]:
    ctx: dict[str, Any] = {}
    for n in expr.names:
        sample = SAMPLES[CATALOGUE[n].type]
        if CATALOGUE[n].type == "map":
            sample = {**sample, **dict.fromkeys(expr.map_keys.get(n, ()), 0.5)}
        ctx[n] = sample
    return ctx


def _plain(value: Any) -> Any:
    """YAML values as JSON-ready values (dates become ISO text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value
