"""Running scenarios: per-client scenario state and the decisions, as pure functions.

Four inputs change a client's scenario state, in any interleaving:

* ``change(state, event, now, client=...)``: a ``loyalty.segment.changed`` CloudEvent. Every
  scenario whose trigger matches is decided once per trigger: the trigger id is remembered,
  so a redelivered event gives nothing. An eligible trigger gives one action, a CloudEvent
  ``loyalty.scenario.action`` whose id is a hash of (trigger id, scenario id): computed
  twice, it is the same event, and consumers can drop duplicates.
* ``calendar(state, client, at, now)``: the calendar scenarios due at ``at``
  (:mod:`rules.scenario.calendar` says when and drives it, with the engine, in time order).
* ``receipt(state, receipt)``: every receipt of the client. It feeds the lifetime ledger
  (:data:`rules.scenarios.LEDGER_METRICS`, deduplicated by receipt id) and, for every
  action whose response window holds the sale, a ``loyalty.scenario.revenue`` event (the
  sale's amount) and, the first time, ``loyalty.scenario.converted``. A sale seen before
  the action it follows (event time is what counts) is matched when the action is made.
* ``communication(state, comm)``: a communication event (:mod:`rules.inputs.communications`). A
  response (opened, clicked, replied, answered) answers the action it names by
  ``action_id``, or, without one, every action on its channel (``any`` matches every
  channel) whose response window holds it; the first answer of an action gives
  ``loyalty.scenario.responded``. Responses dated after the watermark are kept (the
  newest :data:`RESPONSES_KEPT`) to answer actions made later; the same event id twice
  answers nothing new.

Answered: an action counts as answered from the earliest instant a response to it or a
sale converting it was dated. ``max_unanswered`` counts, at a trigger instant ``T``, the
newest actions in a row not answered at or before ``T`` (an answer dated later does not
count, wherever it arrives: the decision is the one made in event time). Purchases still
convert without any communication events; with them, a response also answers.

Redelivery: ``change`` and ``receipt`` take an optional ``seq``, the message's position in
its ordered input (the Kafka offset; one client is always in one partition). A message at
or below the last applied position is skipped, however far back a restart rewinds. Without
``seq``, trigger ids (the last 64) are remembered, and receipts are deduplicated by id over
the engine's retention horizon (``rules.record.state.HORIZON_DAYS`` business days behind the
newest receipt; older ones are ignored here as the engine rejects them).

Reading ahead: a worker may see a client's receipts long before the change events they
cause (backfills). Receipts after the latest trigger instant (the watermark; triggers of a
client come in time order) are kept individually, up to 512, so the ledger can be read as
of a trigger and a receipt seen early can convert a later action; older ones are folded
into the totals.

Decision, for a trigger at instant ``T`` (the change event's ``time``; time-based changes
carry their due instant; a calendar occurrence its instant): outside
``valid_from``/``valid_until`` -> ``inactive``/``expired``; older than the maximum age at
``now`` (``max_age_hours``, else the contact policy's default, 72 h) -> ``stale``; a
suppressing label (``black_list``) -> ``suppressed``; ``when`` false -> ``ineligible`` (a
metric absent from the event, the ledger and the client's record -> ``missing_metric``);
send instant = ``T`` moved out of the quiet hours; sooner than ``cooldown_days`` after the
scenario's previous action -> ``cooldown``; ``max_unanswered`` consecutive unanswered
actions -> ``capped``; the channel closed (no consent, unsubscribed) -> ``no_consent``; the
contact caps -> ``channel_cap`` / ``contact_cap`` (:mod:`rules.scenario.policy`). The
ledger is read as of ``T``: receipts after ``T`` are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from rules.calendar import DAY_S, BusinessCalendar, iso, to_epoch
from rules.inputs.communications import RESPONSES, Communication
from rules.inputs.receipts import CURRENCY_EXPONENT, Receipt
from rules.metrics import CATALOGUE, MetricView
from rules.record.state import HORIZON_DAYS, ClientState, receipt_hash
from rules.scenario import calendar as scenario_calendar
from rules.scenario import events as ev
from rules.scenario.events import (
    ACTION_TYPE,
    CONVERSION_TYPE,
    DEFAULT_SOURCE,
    RESPONDED_TYPE,
    REVENUE_TYPE,
    action_id,
    conversion_id,
    send_instant,
    size_reward,
)
from rules.scenario.policy import ContactPolicy, closed_channels, consent, over_cap, suppressed
from rules.scenario.record import (
    ATTEMPTS_KEPT,
    PENDING_MAX,
    RESPONSES_KEPT,
    SEEN_KEPT,
    STATE_VERSION,
    Attempt,
    ClientScenarios,
    Fired,
    Purchase,
    Response,
    Step,
    dumps,
    ledger,
    loads,
    unanswered,
)
from rules.scenarios import CLIENT_METRICS, LEDGER_METRICS, Scenario

__all__ = [  # with the names re-exported from rules.scenario.events and rules.scenario.record
    "ACTION_TYPE", "ATTEMPTS_KEPT", "CONVERSION_TYPE", "DEFAULT_SOURCE", "PENDING_MAX", "RESPONDED_TYPE",
    "RESPONSES_KEPT", "REVENUE_TYPE", "SEEN_KEPT", "STATE_VERSION", "Attempt", "ClientScenarios", "Fired",
    "Purchase", "Response", "ScenarioRunner", "Step", "action_id", "conversion_id", "dumps", "ledger", "loads",
    "send_instant", "size_reward", "unanswered",
]

def _cel_value(name: str, value: Any, keys: tuple[str, ...]) -> Any:
    kind = CATALOGUE[name].type
    if kind == "double":
        return float(value)
    if kind == "int":
        return int(value)
    if kind == "map":
        return {**dict.fromkeys(keys, 0.0), **{str(k): float(v) for k, v in dict(value).items()}}
    return value


def _record_value(view: MetricView, name: str, keys: tuple[str, ...]) -> Any:
    """A metric read from the client's record (CEL view)."""
    value = view.cel(name)
    metric = CATALOGUE[name]
    if metric.type == "map" and not getattr(metric, "dynamic", False):
        value = {**dict.fromkeys(keys, 0.0), **value}
    return value


def _no_models(t: int) -> Any:
    return None


class ScenarioRunner:
    """Decides actions for triggers and outcomes for receipts and communications. Shareable."""

    def __init__(self, scenarios: list[Scenario], tz: str = "UTC", source: str = DEFAULT_SOURCE,
                 policy: ContactPolicy | None = None) -> None:
        ids = [s.id for s in scenarios]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"scenario {dup[0]!r} is loaded twice")
        self.scenarios = scenarios
        self.by_id = {s.id: s for s in scenarios}
        self.tz = ZoneInfo(tz)
        self.cal = BusinessCalendar(tz)
        self.source = source
        self.policy = policy or ContactPolicy()
        # the population's fitted models at an instant (Engine.models_at), for the predictive
        # metrics a scenario reads from the record; without them, their neutral values
        self.models_at: Callable[[int], Any] = _no_models
        self.calendars = [s for s in scenarios if s.trigger.calendar is not None]
        self._next_any: tuple[int, int | None] | None = None  # memo of scenario.calendar.next_any
        self.dimensions = frozenset(s.trigger.dimension for s in scenarios if s.trigger.calendar is None)

    def matching(self, data: dict[str, Any]) -> list[Scenario]:
        if data.get("dimension") not in self.dimensions:
            return []
        return [s for s in self.scenarios if s.trigger.matches(data)]

    # -- inputs ---------------------------------------------------------------------------

    def change(self, state: ClientScenarios | None, event: dict[str, Any], now: int | None = None,
               seq: int | None = None, client: ClientState | None = None) -> tuple[ClientScenarios | None, Step]:
        """``seq``: the event's position in its ordered input (a Kafka offset), if known.
        ``client``: the client's record (labels, consent, profile metrics), if known."""
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
        fired = Fired(str(event["id"]), at, data.get("metrics") or {},
                      {"id": event["id"], "dimension": data.get("dimension"), "from": data.get("from"),
                       "to": data.get("to"), "ruleset": data.get("ruleset"), "time": event["time"]})
        self.decide_all(state, matched, fired, now, client, step)
        return state, step

    def decide_all(self, state: ClientScenarios, scenarios: list[Scenario], fired: Fired,
                   now: int | None, client: ClientState | None, step: Step) -> None:
        """Decide ``scenarios`` for one trigger, then move the watermark to its instant."""
        for scenario in scenarios:
            reason = self._decide(scenario, state, fired, now, client, step)
            if reason is not None:
                step.skipped.append((scenario.id, reason))
        state.seen.append(fired.id[:16])
        del state.seen[:-SEEN_KEPT]
        # triggers come in time order per client: receipts and responses up to this one are
        # needed neither to read the ledger as of a later trigger nor to match a later action
        state.watermark = max(state.watermark, fired.at)
        state.receipts = [p for p in state.receipts if p.t > state.watermark]
        state.responses = [r for r in state.responses if r.t > state.watermark]
        step.changed = True

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
                for attempt in attempts:
                    self._purchase(state, sid, attempt, purchase, step)
        step.changed = True
        return state, step

    def communication(self, state: ClientScenarios | None,
                      comm: Communication) -> tuple[ClientScenarios | None, Step]:
        """A communication event: a response answers actions (see the module docstring);
        other events (sent, delivered, bounced, unsubscribed) change nothing here (consent is
        read from the client's record). Idempotent: the same event twice answers nothing new."""
        step = Step()
        if comm.event not in RESPONSES:
            return state, step
        state = state or ClientScenarios(comm.client_id)
        response = Response(receipt_hash(comm.event_id), comm.at, comm.channel, comm.event,
                            comm.action_id or "")
        if any(r.h == response.h for r in state.responses):
            return state, step  # kept already: a duplicate
        for sid, attempts in state.attempts.items():
            for attempt in attempts:
                self._respond(state, sid, attempt, response, step)
        if response.t > state.watermark:  # an action made later may be the one it answers
            state.responses.append(response)
            state.responses.sort(key=lambda r: (r.t, r.h))
            del state.responses[:-RESPONSES_KEPT]
        step.changed = True
        return state, step

    def calendar(self, state: ClientScenarios | None, client: ClientState, at: int,
                 now: int | None = None) -> tuple[ClientScenarios | None, Step]:
        """Decide the calendar scenarios with an occurrence at ``at`` whose segment the
        client is in (``client`` as of ``at``: :func:`rules.scenario.calendar.catch_up`)."""
        step = Step()
        scenarios = scenario_calendar.due_at(self, client, at)
        if not scenarios:
            return state, step
        state = state or ClientScenarios(client.client_id)
        for s in scenarios:
            trig = s.trigger
            assert trig.calendar is not None
            tid = ev.action_id(f"calendar:{client.client_id}:{at}", s.id)[:16]  # per client
            if tid in state.seen:
                step.skipped.append((s.id, "duplicate"))
                continue
            segment = client.segments.get(trig.dimension, [None])[0] if trig.dimension else None
            fired = Fired(tid, at, None, {"id": tid, "calendar": trig.calendar.label(), "time": iso(at),
                                          "dimension": trig.dimension or None, "segment": segment})
            self.decide_all(state, [s], fired, now, client, step)
        return state, step

    def campaign(self, state: ClientScenarios | None, client: ClientState, scenario_id: str,
                 campaign: str, dimension: str, segment: str, at: int,
                 now: int | None = None) -> tuple[ClientScenarios | None, Step]:
        """A one-off campaign (a loaded scenario with ``trigger: {manual: true}``) sent at
        ``at`` to the members of ``dimension``/``segment``: the client gets the action if it
        is a member now, through the same conditions, caps and consent as any trigger.
        Sent twice (a redelivery, the command run again), the campaign decides once."""
        step = Step()
        s = self.by_id.get(scenario_id)
        if s is None or not s.trigger.manual:
            step.skipped.append((scenario_id, "unknown_campaign"))
            return state, step
        current = client.segments.get(dimension)
        if current is None or current[0] != segment:
            step.skipped.append((s.id, "not_member"))
            return state, step
        state = state or ClientScenarios(client.client_id)
        tid = ev.action_id(f"campaign:{campaign}:{client.client_id}", s.id)[:16]
        if tid in state.seen:
            step.skipped.append((s.id, "duplicate"))
            return state, step
        fired = Fired(tid, at, None, {"id": tid, "campaign": campaign, "time": iso(at),
                                      "dimension": dimension, "segment": segment})
        self.decide_all(state, [s], fired, now, client, step)
        return state, step

    # -- internals ------------------------------------------------------------------------

    def context(self, scenario: Scenario, metrics: dict[str, Any] | None, state: ClientScenarios,
                at: int, client: ClientState | None = None) -> dict[str, Any] | None:
        """CEL variables of the scenario's expressions; None if one is not available.
        ``metrics`` None (a calendar trigger): every metric but the ledger's is read from
        the client's record at ``at``."""
        ctx: dict[str, Any] = {}
        book: dict[str, Any] | None = None
        view: MetricView | None = None
        keys = {k: v for e in (scenario.when, scenario.action.reward) if e for k, v in e.map_keys.items()}
        for name in scenario.names():
            if metrics is not None and metrics.get(name) is not None:
                ctx[name] = _cel_value(name, metrics[name], keys.get(name, ()))
            elif name in LEDGER_METRICS:
                book = book or ledger(state, at)
                ctx[name] = book[name]
            elif client is not None and (metrics is None or name in CLIENT_METRICS):
                view = view or MetricView(client, at, self.cal, self.models_at(at))
                ctx[name] = _record_value(view, name, keys.get(name, ()))
            else:
                return None
        return ctx

    def next_calendar(self, state: ClientScenarios | None, client: ClientState,
                      after: int | None = None) -> int | None:
        """The client's next calendar occurrence (:func:`rules.scenario.calendar.next_calendar`):
        the caller's next due instant includes it."""
        return scenario_calendar.next_calendar(self, state, client, after)

    def sent(self, state: ClientScenarios) -> list[tuple[int, str]]:
        """(send instant, channel) of the client's remembered actions, every scenario."""
        return [(a.at, a.channel) for attempts in state.attempts.values() for a in attempts]

    def _decide(self, s: Scenario, state: ClientScenarios, fired: Fired, now: int | None,
                client: ClientState | None, step: Step) -> str | None:
        at = fired.at
        if s.valid_from is not None and at < s.valid_from:
            return "inactive"
        if s.valid_until is not None and at >= s.valid_until:
            return "expired"
        max_age = self.policy.max_age(s.max_age_hours)
        if max_age and now is not None and now - at > max_age:
            return "stale"
        if suppressed(self.policy, client):
            return "suppressed"
        ctx = self.context(s, fired.metrics, state, at, client)
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
        streak = unanswered(attempts, at)
        if s.max_unanswered and streak >= s.max_unanswered:
            return "capped"
        channel = s.action.channel
        closed = closed_channels(client)
        if not consent(channel, closed):
            return "no_consent"
        capped = over_cap(self.policy, channel, send_at, self.sent(state))
        if capped is not None:
            return capped
        attempt = Attempt(action_id(fired.id, s.id), send_at, channel=channel)
        attempts.append(attempt)
        del attempts[:-ATTEMPTS_KEPT]
        avoid = closed if channel == "any" else []
        step.actions.append(self._action(s, state, fired, attempt, reward, streak + 1, ctx, avoid))
        for p in state.receipts:  # sales already seen (event time after the action)
            self._purchase(state, s.id, attempt, p, step)
        for r in state.responses:  # responses already seen
            self._respond(state, s.id, attempt, r, step)
        return None

    def _window(self, sid: str) -> int | None:
        """Seconds of the response window of ``sid``'s actions (None: not loaded any more)."""
        s = self.by_id.get(sid)
        return None if s is None else s.response_days * DAY_S

    def _base(self, state: ClientScenarios, sid: str, attempt: Attempt) -> dict[str, Any]:
        s = self.by_id.get(sid)
        return ev.outcome_data(state.client_id, sid, s.campaign if s is not None else None,
                               attempt.action_id, attempt.at)

    def _purchase(self, state: ClientScenarios, sid: str, attempt: Attempt, p: Purchase,
                  step: Step) -> None:
        """A sale within the action's response window: its revenue, and the conversion once."""
        window = self._window(sid)
        if window is None or not (p.sale and attempt.at < p.t <= attempt.at + window):
            return
        base = self._base(state, sid, attempt)
        step.outcomes.append(ev.revenue(self.source, base, p.receipt_id, p.t, p.amount, state.exponent))
        attempt.answered = min(attempt.answered or p.t, p.t)
        if not attempt.converted:
            attempt.converted = True
            step.conversions.append(ev.conversion(self.source, base, p.receipt_id, p.t, p.amount,
                                                  state.exponent, attempt.at))

    def _respond(self, state: ClientScenarios, sid: str, attempt: Attempt, r: Response,
                 step: Step) -> None:
        window = self._window(sid)
        if window is None:
            return
        if r.action_id:
            if r.action_id != attempt.action_id:
                return
        elif attempt.channel not in ("any", r.channel) or not attempt.at < r.t <= attempt.at + window:
            return
        attempt.answered = min(attempt.answered or r.t, r.t)
        if not attempt.responded:
            attempt.responded = True
            step.outcomes.append(ev.responded(self.source, self._base(state, sid, attempt), r.event,
                                              r.channel, r.t, "action_id" if r.action_id else "channel"))

    def _action(self, s: Scenario, state: ClientScenarios, fired: Fired, attempt: Attempt,
                reward: Any, number: int, ctx: dict[str, Any], avoid: list[str]) -> dict[str, Any]:
        a = s.action
        return ev.envelope(ev.ACTION_TYPE, attempt.action_id, self.source, state.client_id, attempt.at, {
            "client_id": state.client_id, "scenario": s.id, "scenario_version": s.version,
            "campaign": s.campaign, "offer": a.offer, "reward": None if reward is None else str(reward),
            "unit": a.unit, "channel": a.channel, "avoid_channels": avoid, "template": a.template,
            "attributes": a.attributes, "attempt": number,
            "send_at": iso(attempt.at), "expires_at": iso(attempt.at + s.expires_days * DAY_S),
            "respond_by": iso(attempt.at + s.response_days * DAY_S),
            "inputs": ctx, "trigger": fired.data,
        })
