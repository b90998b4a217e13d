"""Running scenarios: per-client scenario state and the decisions, as pure functions.

Two inputs change a client's scenario state, in any interleaving:

* ``change(state, event, now)``: a ``loyalty.segment.changed`` CloudEvent. Every scenario
  whose trigger matches is decided once per trigger: the trigger id is remembered, so a
  redelivered event gives nothing. An eligible trigger gives one action, a CloudEvent
  ``loyalty.scenario.action`` whose id is a hash of (trigger id, scenario id): computed
  twice, it is the same event, and consumers can drop duplicates.
* ``receipt(state, receipt)``: every receipt of the client. It feeds the lifetime ledger
  (:data:`rules.scenarios.LEDGER_METRICS`, deduplicated by receipt id) and converts
  actions: a sale within ``response_days`` after an action's send instant converts it
  (``loyalty.scenario.converted``, id = hash of the action id). A sale seen before the
  action it converts (event time is what counts) converts it when the action is made.

Redelivery: both take an optional ``seq``, the message's position in its ordered input
(the Kafka offset; one client is always in one partition). A message at or below the last
applied position is skipped, however far back a restart rewinds. Without ``seq``, trigger
ids (the last 64) are remembered, and receipts are deduplicated by id over the engine's
retention horizon (``rules.state.HORIZON_DAYS`` business days behind the newest receipt;
older ones are ignored here as the engine rejects them).

Reading ahead: a worker may see a client's receipts long before the change events they
cause (backfills). Receipts after the latest trigger instant (the watermark; triggers of a
client come in time order) are kept individually, up to 512, so the ledger can be read as
of a trigger and a receipt seen early can convert a later action; older ones are folded
into the totals.

Decision, for a trigger at instant ``T`` (the change event's ``time``; time-based changes
carry their due instant): outside ``valid_from``/``valid_until`` -> ``inactive``/``expired``;
older than ``max_age_hours`` at ``now`` -> ``stale``; ``when`` false -> ``ineligible`` (a
metric absent from the event and the ledger -> ``missing_metric``); send instant = ``T``
moved out of the quiet hours; sooner than ``cooldown_days`` after the scenario's previous
action -> ``cooldown``; ``max_unanswered`` consecutive unconverted actions -> ``capped``
(a conversion ends the run; an action whose window is still open counts as unanswered so
far). The ledger is read as of ``T``: receipts after ``T`` are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from rules.calendar import DAY_S, BusinessCalendar, iso, to_epoch
from rules.metrics import CATALOGUE
from rules.receipts import CURRENCY_EXPONENT, Receipt
from rules.scenarios import CENT, LEDGER_METRICS, Action, QuietHours, Scenario
from rules.state import HORIZON_DAYS, receipt_hash

ACTION_TYPE = "loyalty.scenario.action"
CONVERSION_TYPE = "loyalty.scenario.converted"
DEFAULT_SOURCE = "urn:loyalty:scenarios"
STATE_VERSION = 1
SEEN_KEPT = 64  # trigger ids remembered per client (redelivery horizon)
PENDING_MAX = 512  # receipts after the latest trigger kept per client (backfills: oldest dropped)
ATTEMPTS_KEPT = 12  # actions remembered per client and scenario


@dataclass(slots=True)
class Attempt:
    action_id: str
    at: int  # send instant, epoch s
    converted: bool = False


@dataclass(slots=True)
class Purchase:
    receipt_id: str
    t: int
    amount: int  # minor units; negative for a return
    sale: bool


@dataclass(slots=True)
class ClientScenarios:
    client_id: str
    revenue: int = 0  # net of returns, minor units
    visits: int = 0  # sales
    exponent: int = 2
    receipts: list[Purchase] = field(default_factory=list)  # after the watermark, by time
    ids: list[tuple[int, int]] = field(default_factory=list)  # (receipt hash, t) in the horizon
    max_seen: int = 0  # the newest receipt's instant
    watermark: int = 0  # the latest trigger instant: earlier receipts are in the totals only
    receipt_seq: int = -1  # position of the last receipt applied in its ordered input (offset)
    change_seq: int = -1  # same for change events
    seen: list[str] = field(default_factory=list)  # trigger ids (16 hex), oldest first
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)


@dataclass(slots=True)
class Step:
    actions: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (scenario, reason)
    changed: bool = False  # the state must be stored


def dumps(state: ClientScenarios) -> bytes:
    return orjson.dumps({
        "v": STATE_VERSION, "c": state.client_id, "rev": state.revenue, "vis": state.visits,
        "exp": state.exponent, "r": [[p.receipt_id, p.t, p.amount, int(p.sale)] for p in state.receipts],
        "i": state.ids, "m": state.max_seen, "w": state.watermark, "rq": state.receipt_seq, "cq": state.change_seq,
        "s": state.seen,
        "a": {k: [[a.action_id, a.at, int(a.converted)] for a in v] for k, v in state.attempts.items()},
    })


def loads(raw: bytes) -> ClientScenarios:
    d = orjson.loads(raw)
    return ClientScenarios(
        d["c"], d["rev"], d["vis"], d["exp"], [Purchase(r[0], r[1], r[2], bool(r[3])) for r in d["r"]],
        [(h, t) for h, t in d["i"]], d["m"], d["w"], d["rq"], d["cq"], list(d["s"]),
        {k: [Attempt(a[0], a[1], bool(a[2])) for a in v] for k, v in d["a"].items()})


def size_reward(action: Action, value: Any) -> Decimal:
    """CEL result -> Decimal money: 2 places (half up), then floor and cap (Decimal)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"the reward must be a number, got {type(value).__name__}")
    amount = Decimal(repr(value) if isinstance(value, float) else value).quantize(CENT, ROUND_HALF_UP)
    if action.floor is not None and amount < action.floor:
        amount = action.floor
    if action.cap is not None and amount > action.cap:
        amount = action.cap
    return amount


def send_instant(quiet: QuietHours | None, t: int, tz: ZoneInfo) -> int:
    """``t`` if outside the quiet hours, else the instant they end (business time zone)."""
    if quiet is None or quiet.start == quiet.end:
        return t
    local = datetime.fromtimestamp(t, tz)
    minute = local.hour * 60 + local.minute
    if quiet.start < quiet.end:
        silent, day = quiet.start <= minute < quiet.end, local.date()
    else:  # wraps midnight, e.g. 22:00-09:00
        silent = minute >= quiet.start or minute < quiet.end
        day = local.date() + timedelta(days=1) if minute >= quiet.start else local.date()
    if not silent:
        return t
    end = datetime.combine(day, time(quiet.end // 60, quiet.end % 60), tzinfo=tz)
    return max(t, to_epoch(end))


def action_id(trigger_id: str, scenario_id: str) -> str:
    return hashlib.sha256(f"{trigger_id}\x1f{scenario_id}".encode()).hexdigest()[:32]


def conversion_id(action: str) -> str:
    return hashlib.sha256(f"{action}\x1fconverted".encode()).hexdigest()[:32]


def unanswered(attempts: list[Attempt]) -> int:
    """Consecutive unconverted actions, newest first."""
    n = 0
    for a in reversed(attempts):
        if a.converted:
            break
        n += 1
    return n


def ledger(state: ClientScenarios, at: int) -> dict[str, Any]:
    """Lifetime figures as of ``at`` (CEL view: money as doubles in major units)."""
    revenue, visits = state.revenue, state.visits
    for p in state.receipts:
        if p.t > at:
            revenue -= p.amount
            visits -= int(p.sale)
    value = revenue / 10**state.exponent
    return {"lifetime_value": value, "lifetime_revenue": value, "lifetime_visits": visits,
            "avg_check": value / visits if visits > 0 else 0.0}


def _cel_value(name: str, value: Any, keys: tuple[str, ...]) -> Any:
    kind = CATALOGUE[name].type
    if kind == "double":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "map":
        return {**dict.fromkeys(keys, 0.0), **{str(k): float(v) for k, v in dict(value).items()}}
    return value


class ScenarioRunner:
    """Decides actions for change events and conversions for receipts. Shareable."""

    def __init__(self, scenarios: list[Scenario], tz: str = "UTC",
                 source: str = DEFAULT_SOURCE) -> None:
        ids = [s.id for s in scenarios]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"scenario {dup[0]!r} is loaded twice")
        self.scenarios = scenarios
        self.by_id = {s.id: s for s in scenarios}
        self.tz = ZoneInfo(tz)
        self.cal = BusinessCalendar(tz)
        self.source = source
        self.dimensions = frozenset(s.trigger.dimension for s in scenarios)

    def matching(self, data: dict[str, Any]) -> list[Scenario]:
        if data.get("dimension") not in self.dimensions:
            return []
        return [s for s in self.scenarios if s.trigger.matches(data)]

    # -- inputs ---------------------------------------------------------------------------

    def change(self, state: ClientScenarios | None, event: dict[str, Any],
               now: int | None = None, seq: int | None = None) -> tuple[ClientScenarios | None, Step]:
        """``seq``: the event's position in its ordered input (a Kafka offset), if known."""
        data = event["data"]
        step = Step()
        matched = self.matching(data)
        if not matched:
            return state, step
        state = state or ClientScenarios(str(data.get("client_id") or event["subject"]))
        trigger = str(event["id"])[:16]
        if trigger in state.seen or (seq is not None and seq <= state.change_seq):
            step.skipped = [(s.id, "duplicate") for s in matched]
            return state, step
        if seq is not None:
            state.change_seq = seq
        at = to_epoch(datetime.fromisoformat(event["time"]))
        for scenario in matched:
            reason = self._decide(scenario, state, event, at, now, step)
            if reason is not None:
                step.skipped.append((scenario.id, reason))
        state.seen.append(trigger)
        del state.seen[:-SEEN_KEPT]
        # triggers come in time order per client: receipts up to this one are needed neither
        # to read the ledger as of a later trigger nor to convert a later action
        state.watermark = max(state.watermark, at)
        state.receipts = [p for p in state.receipts if p.t > state.watermark]
        step.changed = True
        return state, step

    def receipt(self, state: ClientScenarios | None, receipt: Receipt,
                seq: int | None = None) -> tuple[ClientScenarios, Step]:
        """``seq``: the receipt's position in its ordered input (a Kafka offset), if known:
        a redelivered message (``seq`` not above the last applied one) is skipped."""
        assert receipt.client_id is not None
        state = state or ClientScenarios(receipt.client_id)
        step = Step()
        if seq is not None and seq <= state.receipt_seq:
            return state, step
        if seq is not None:
            state.receipt_seq = seq
            step.changed = True
        t, h = receipt.at, receipt_hash(receipt.receipt_id)
        oldest = self.cal.day(max(state.max_seen, t)) - HORIZON_DAYS
        if self.cal.day(t) <= oldest or any(i[0] == h for i in state.ids):
            return state, step  # beyond the horizon (the engine rejects it) or a duplicate
        sale = receipt.type == "sale"
        purchase = Purchase(receipt.receipt_id, t, receipt.total if sale else -receipt.total, sale)
        state.revenue += purchase.amount
        state.visits += int(sale)
        state.exponent = CURRENCY_EXPONENT.get(receipt.currency, 2)
        state.max_seen = max(state.max_seen, t)
        state.ids = [i for i in state.ids if self.cal.day(i[1]) > oldest] + [(h, t)]
        if purchase.t > state.watermark:
            state.receipts.append(purchase)
            state.receipts.sort(key=lambda p: p.t)
            del state.receipts[:-PENDING_MAX]
        if sale:
            for sid, attempts in state.attempts.items():
                scenario = self.by_id.get(sid)
                if scenario is None:
                    continue
                for attempt in attempts:
                    if not attempt.converted and self._converts(scenario, attempt, purchase):
                        step.conversions.append(self._convert(state, sid, attempt, purchase))
        step.changed = True
        return state, step

    # -- internals ------------------------------------------------------------------------

    def context(self, scenario: Scenario, metrics: dict[str, Any], state: ClientScenarios,
                at: int) -> dict[str, Any] | None:
        """CEL variables of the scenario's expressions; None if one is not available."""
        ctx: dict[str, Any] = {}
        book: dict[str, Any] | None = None
        keys = {k: v for e in (scenario.when, scenario.action.reward) if e for k, v in e.map_keys.items()}
        for name in scenario.names():
            if name in metrics and metrics[name] is not None:
                ctx[name] = _cel_value(name, metrics[name], keys.get(name, ()))
            elif name in LEDGER_METRICS:
                book = book or ledger(state, at)
                ctx[name] = book[name]
            else:
                return None
        return ctx

    def _decide(self, s: Scenario, state: ClientScenarios, event: dict[str, Any], at: int,
                now: int | None, step: Step) -> str | None:
        if s.valid_from is not None and at < s.valid_from:
            return "inactive"
        if s.valid_until is not None and at >= s.valid_until:
            return "expired"
        if s.max_age_hours is not None and now is not None and now - at > s.max_age_hours * 3600:
            return "stale"
        ctx = self.context(s, event["data"].get("metrics") or {}, state, at)
        if ctx is None:
            return "missing_metric"
        reward = None
        try:
            if s.when is not None and s.when.program.execute(ctx) is not True:
                return "ineligible"
            if s.action.reward is not None:
                reward = size_reward(s.action, s.action.reward.program.execute(ctx))
        except (TypeError, RuntimeError, ValueError):
            return "error"
        send_at = send_instant(s.quiet_hours, at, self.tz)
        attempts = state.attempts.setdefault(s.id, [])
        if attempts and send_at < attempts[-1].at + s.cooldown_days * DAY_S:
            return "cooldown"
        streak = unanswered(attempts)
        if s.max_unanswered and streak >= s.max_unanswered:
            return "capped"
        attempt = Attempt(action_id(str(event["id"]), s.id), send_at)
        attempts.append(attempt)
        del attempts[:-ATTEMPTS_KEPT]
        step.actions.append(self._action(s, state, event, attempt, reward, streak + 1, ctx))
        for p in state.receipts:  # a sale already seen (event time after the action) converts it
            if not attempt.converted and self._converts(s, attempt, p):
                step.conversions.append(self._convert(state, s.id, attempt, p))
        return None

    @staticmethod
    def _converts(s: Scenario, attempt: Attempt, p: Purchase) -> bool:
        return p.sale and attempt.at < p.t <= attempt.at + s.response_days * DAY_S

    def _action(self, s: Scenario, state: ClientScenarios, event: dict[str, Any], attempt: Attempt,
                reward: Any, number: int, ctx: dict[str, Any]) -> dict[str, Any]:
        data = event["data"]
        a = s.action
        return {
            "specversion": "1.0", "id": attempt.action_id, "source": self.source,
            "type": ACTION_TYPE, "subject": state.client_id, "time": iso(attempt.at),
            "datacontenttype": "application/json",
            "data": {
                "client_id": state.client_id, "scenario": s.id, "scenario_version": s.version,
                "offer": a.offer, "reward": None if reward is None else str(reward),
                "unit": a.unit, "channel": a.channel, "template": a.template,
                "attributes": a.attributes, "attempt": number,
                "send_at": iso(attempt.at), "expires_at": iso(attempt.at + s.expires_days * DAY_S),
                "respond_by": iso(attempt.at + s.response_days * DAY_S),
                "inputs": ctx,
                "trigger": {"id": event["id"], "dimension": data.get("dimension"),
                            "from": data.get("from"), "to": data.get("to"),
                            "ruleset": data.get("ruleset"), "time": event["time"]},
            },
        }

    def _convert(self, state: ClientScenarios, sid: str, attempt: Attempt, p: Purchase) -> dict[str, Any]:
        attempt.converted = True
        return {
            "specversion": "1.0", "id": conversion_id(attempt.action_id), "source": self.source,
            "type": CONVERSION_TYPE, "subject": state.client_id, "time": iso(p.t),
            "datacontenttype": "application/json",
            "data": {"client_id": state.client_id, "scenario": sid, "action_id": attempt.action_id,
                     "action_time": iso(attempt.at), "receipt_id": p.receipt_id,
                     "purchased_at": iso(p.t), "days_after": (p.t - attempt.at) // DAY_S},
        }
