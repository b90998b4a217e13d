"""The engine: one object that applies receipts, profiles and the passage of time to a
client's record and returns the segment-change events. Used as is by ``loyalty replay``
and by the Faust agents, so both compute the same thing.

Time model: every client has a clock, the instant of its latest evaluation (a receipt's
event time, a profile's ``updated_at`` or a due transition). A receipt first lets the time
before it pass (``advance``), then is folded in and evaluated at ``max(clock, occurred_at)``:
a late receipt is evaluated at the client's clock, never in the past. Time-based changes
take effect at their due instant, which is the event's ``time``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rules.calendar import DAY_S, BusinessCalendar, to_epoch
from rules.errors import RuleSetError
from rules.evaluate import Plan, Verdict, effective
from rules.events import DEFAULT_SOURCE, receipt_fact, segment_changed
from rules.inputs.communications import Communication
from rules.inputs.receipts import CURRENCY_EXPONENT, Profile, Receipt
from rules.metrics import CATALOGUE, MetricView, money_text
from rules.metrics.predictive import with_predictions
from rules.population import PREDICTIVE, Snapshot, Spec, Stat
from rules.predict.snapshot import Models
from rules.record import comm as comm_state
from rules.record.state import (
    Archived,
    ClientState,
    Outcome,
    apply_profile,
    apply_receipt,
    initialize,
    receipt_hash,
    take_dropped,
)
from rules.ruleset import Dimension, RuleSet, bind

FOREVER = 32_503_680_000  # 3000-01-01: later than any due instant the core computes
NEAR_S = 35 * DAY_S  # next_due lists the candidates of the next 35 days before the rest
SUMMARY_METRICS = ("lifetime_visits", "lifetime_value", "visits_30d", "revenue_30d",
                   "avg_check_30d", "days_since_last_purchase", "mean_interval_days")


@dataclass(slots=True)
class Result:
    state: ClientState | None
    events: list[dict[str, Any]] = field(default_factory=list)
    outcome: Outcome = Outcome.APPLIED
    # month -> (sales, returns) rows that left the record: add them to the client's archive
    # (rules.record.state.archive_add / archive_key)
    archive: dict[int, tuple[list[Any], list[Any]]] = field(default_factory=dict)


class Engine:
    def __init__(self, rulesets: list[RuleSet], tz: str = "UTC",
                 source: str = DEFAULT_SOURCE) -> None:
        self.rulesets = rulesets
        self.cal = BusinessCalendar(tz)
        self.source = source
        seen: dict[str, str] = {}
        for rs in rulesets:
            for dim in rs.dimensions:
                if dim.id in seen:
                    raise RuleSetError(f"dimension {dim.id!r} is defined by {seen[dim.id]} too",
                                       rs.path, dim.line, dim.id)
                seen[dim.id] = rs.path
        self.dims = [(rs, d) for rs in rulesets for d in rs.dimensions]
        # some rule set evaluates clients with no purchase yet (``clients: all``)
        self.all_clients = any(rs.clients == "all" for rs in rulesets)
        self.metric_names = tuple(sorted(set(with_predictions({m for _, d in self.dims for m in d.metrics
                                                               if not CATALOGUE[m].personal}))
                                         | set(SUMMARY_METRICS)))
        # what a change event carries: the dimension's metrics but personal ones (a name,
        # labels, custom attributes: rules read them, events never carry them)
        self._event_metrics = {d.id: with_predictions(tuple(m for m in d.metrics if not CATALOGUE[m].personal))
                               for _, d in self.dims}
        self.spec = Spec(_population_stats(rulesets))
        # population snapshots so far, by instant: an input dated t is evaluated against the
        # latest one at or before t, whenever it is processed (a redelivery gives the same)
        self.snapshots: list[Snapshot] = []
        self._instants: list[int] = []
        self._base = Plan(_without_population(rulesets))  # before the first snapshot
        self._plans: dict[int, Plan] = {}  # snapshot index -> its plan (the last few)
        self.plan = self._base
        # what a stored client was evaluated by: the rule sets' versions and the time zone
        self.fingerprint = hashlib.sha256(
            "\x1f".join([tz, *(f"{rs.name}={rs.version}" for rs in rulesets)]).encode()).digest()[:8]

    @property
    def errors(self) -> int:
        """Rule runtime errors so far (each counted as "no match")."""
        return self._base.errors + sum(p.errors for p in self._plans.values())

    # -- the population ---------------------------------------------------------------

    @property
    def population(self) -> Snapshot | None:
        """The latest snapshot (None: none yet)."""
        return self.snapshots[-1] if self.snapshots else None

    def set_population(self, snapshot: Snapshot) -> None:
        """Add the next snapshot (one at or before the latest is ignored). Clients catch up
        with it in :meth:`advance` (every input does) or :meth:`catch_up`. Before the first
        snapshot, dimensions that read the population are not evaluated."""
        if self._instants and snapshot.instant <= self._instants[-1]:
            return
        self.snapshots.append(snapshot)
        self._instants.append(snapshot.instant)

    def _plan(self, i: int) -> Plan:
        """The plan of snapshot ``i`` (-1: before the first)."""
        if i < 0 or not self.spec.stats:
            return self._base
        plan = self._plans.get(i)
        if plan is None:
            if len(self._plans) >= 8:
                self._plans.pop(next(iter(self._plans)))
            values = self.snapshots[i].values
            plan = self._plans[i] = Plan([bind(rs, values) for rs in self.rulesets],
                                         Models.of(values.get(PREDICTIVE.name)))
        return plan

    def models_at(self, t: int) -> Models | None:
        """The fitted models of the snapshot an input dated ``t`` is evaluated against."""
        i = bisect_right(self._instants, t) - 1
        return self._plan(i).models if i >= 0 else None

    def _use_at(self, t: int) -> None:
        """Evaluate with the latest snapshot at or before ``t``."""
        if self._instants:
            self.plan = self._plan(bisect_right(self._instants, t) - 1)

    def catch_up(self, state: ClientState, until: int | None = None) -> list[dict[str, Any]]:
        """Evaluate a client at each snapshot instant in (its last one, ``until``] (default:
        the latest snapshot), time-based changes due before each instant first, under the
        values before it: change events with cause ``population`` at the instant (at the
        client's clock if that is later)."""
        events: list[dict[str, Any]] = []
        instants = self._instants
        if not instants:
            return events
        until = instants[-1] if until is None else until
        i = bisect_right(instants, state.pop)
        if not self.evaluated(state):  # nothing to evaluate: skip to the last snapshot due
            last = bisect_right(instants, until) - 1
            if last >= i:
                state.pop = instants[last]
            return events
        while i < len(instants) and instants[i] <= until:
            at = instants[i]
            self.plan = self._plan(i - 1)
            events += self._advance(state, at)
            self.plan = self._plan(i)
            at = max(at, state.clock)
            events += self._evaluate(state, at, "population", None)
            state.clock = at  # an evaluated client (the others returned above)
            state.pop = instants[i]
            i += 1
        return events

    # -- inputs -------------------------------------------------------------------------

    def receipt(self, state: ClientState | None, receipt: Receipt,
                archived: Archived | None = None) -> Result:
        """Apply one validated receipt; ``archived`` reads the client's archive (see
        :mod:`rules.record.state`). Raises RejectedInput for a conflicting or mixed-currency one."""
        if receipt.client_id is None:
            return Result(state, [], Outcome.ANONYMOUS)
        state = state or initialize(receipt.client_id)
        t = receipt.at
        events = self.advance(state, t)
        state, outcome = apply_receipt(state, receipt, self.cal, archived)
        if outcome is Outcome.APPLIED:
            at = max(state.clock, t)
            events += self._evaluate(state, at, "receipt", receipt.receipt_id)
            state.clock = at
        archive = take_dropped(state, self.cal) if state.dropped else {}
        return Result(state, events, outcome, archive)

    def profile(self, state: ClientState | None, profile: Profile) -> Result:
        state = state or initialize(profile.client_id)
        at = state.clock
        if profile.updated_at is not None:
            at = max(at, to_epoch(profile.updated_at))
        elif not state.has_purchase and isinstance(registered := profile.fields.get("registered_at"), datetime):
            at = max(at, to_epoch(registered))  # a lead's profile without updated_at: known since then
        events = self.advance(state, at)
        apply_profile(state, profile)
        if self.evaluated(state) and (at or state.has_purchase):  # a time to evaluate at
            events += self._evaluate(state, at, "profile", None)
            state.clock = at
        return Result(state, events)

    def communication(self, state: ClientState | None, comm: Communication) -> Result:
        """Apply one validated communication event (:mod:`rules.record.comm`), evaluated at
        ``max(clock, occurred_at)`` like a receipt. Raises RejectedInput
        ``conflicting_duplicate`` for an event id seen with another instant or kind."""
        state = state or initialize(comm.client_id)
        t = comm.at
        events = self.advance(state, t)
        state.comm, applied = comm_state.apply(state.comm, comm, receipt_hash(comm.event_id), self.cal)
        if not applied:
            return Result(state, events, Outcome.DUPLICATE)
        if self.evaluated(state):
            at = max(state.clock, t)
            events += self._evaluate(state, at, "communication", None)
            state.clock = at
        return Result(state, events)

    def evaluated(self, state: ClientState) -> bool:
        """Whether the rules evaluate this client: one with a purchase, or, when a rule set
        says ``clients: all``, one known from a profile or communications."""
        return state.has_purchase or (self.all_clients and bool(
            state.profile or state.profile_at or state.comm is not None))

    def advance(self, state: ClientState, until: int) -> list[dict[str, Any]]:
        """Fire every time-based change due in (clock, until], each at its due instant, and
        the population snapshots up to ``until`` (:meth:`catch_up`)."""
        events = self.catch_up(state, until) if self._instants else []
        self._use_at(max(until, state.clock))
        return events + self._advance(state, until)

    def _advance(self, state: ClientState, until: int) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while state.segments and until > state.clock:
            changed = False
            for c in self.plan.candidates(state, state.clock, until, self.cal):
                view = MetricView(state, c, self.cal, self.plan.models)
                changes = self._changes(state, c, view)
                if changes:
                    events += [self._change(state, rs, dim, c, v, "time", None, view)
                               for rs, dim, v in changes]
                    state.clock = c
                    changed = True
                    if self.plan.hysteresis:
                        break  # new stays start: candidates change
            if not changed or not self.plan.hysteresis:
                break
        return events

    def reevaluate(self, state: ClientState, at: int) -> list[dict[str, Any]]:
        """Evaluate every dimension at ``max(at, clock)`` (cause ``rules``): for a client
        last evaluated by other rules (another :attr:`fingerprint`). Time-based changes the
        old rules had pending are folded into this evaluation; segments of dimensions these
        rules no longer define are dropped."""
        known = {dim.id for _, dim in self.dims}
        for dim_id in [d for d in state.segments if d not in known]:
            del state.segments[dim_id]
        at = max(at, state.clock)
        events = self.catch_up(state, at) if self._instants else []
        self._use_at(at)
        events += self._evaluate(state, at, "rules", None)
        if self.evaluated(state):
            state.clock = at
        return events

    def next_due(self, state: ClientState) -> int | None:
        """Earliest instant at which some segment changes with no new input (None: never).
        A client behind a population snapshot is due at its instant at the latest."""
        behind = None
        if self._instants and self.evaluated(state):
            i = bisect_right(self._instants, state.pop)
            behind = self._instants[i] if i < len(self._instants) else None
        if not state.segments:
            return behind
        self._use_at(state.clock)
        after = state.clock
        for until in (after + NEAR_S, FOREVER):  # most changes are near: list those first
            for c in self.plan.candidates(state, after, until, self.cal):
                if behind is not None and c >= behind:
                    return behind
                if self._changes(state, c):
                    return c
            after = until
        return behind

    # -- views ------------------------------------------------------------------------------

    def fact(self, state: ClientState, receipt: Receipt) -> dict[str, Any]:
        """The receipt fact of a receipt just applied to ``state`` (:func:`rules.events.receipt_fact`)."""
        assert receipt.client_id is not None
        sign = 1 if receipt.type == "sale" else -1
        return receipt_fact(receipt.receipt_id, receipt.client_id, receipt.at, receipt.type,
                            money_text(sign * receipt.total, CURRENCY_EXPONENT.get(receipt.currency, 2)),
                            receipt.currency, self.segments(state))

    def segments(self, state: ClientState) -> dict[str, str]:
        return {dim.id: state.segments[dim.id][0] for _, dim in self.dims if dim.id in state.segments}

    def metrics(self, state: ClientState, at: int) -> dict[str, Any]:
        view = MetricView(state, at, self.cal, self.models_at(at))
        return {name: view.out(name) for name in self.metric_names}

    # -- internals ----------------------------------------------------------------------------

    def _changes(self, state: ClientState, at: int,
                 view: MetricView | None = None) -> list[tuple[RuleSet, Dimension, Verdict]]:
        out = []
        segments = state.segments
        verdicts = self.plan.verdicts(state, at, self.cal, view)
        buyer = state.has_purchase
        for (rs, dim), verdict, hold in zip(self.plan.dims, verdicts, self.plan.holds, strict=True):
            if not buyer and rs.clients != "all":
                continue
            current = segments.get(dim.id)
            if current is None:
                out.append((rs, dim, verdict))
            elif verdict.segment != current[0]:
                if hold:
                    verdict = effective(dim, verdict, current, at)
                    if verdict.segment == current[0]:
                        continue
                out.append((rs, dim, verdict))
        return out

    def _evaluate(self, state: ClientState, at: int, cause: str,
                  receipt_id: str | None) -> list[dict[str, Any]]:
        if not self.evaluated(state):
            return []
        view = MetricView(state, at, self.cal, self.plan.models)
        return [self._change(state, rs, dim, at, v, cause, receipt_id, view)
                for rs, dim, v in self._changes(state, at, view)]

    def _change(self, state: ClientState, rs: RuleSet, dim: Dimension, at: int,
                verdict: Verdict, cause: str, receipt_id: str | None,
                view: MetricView | None = None) -> dict[str, Any]:
        to, rule = verdict.segment, verdict.rule
        current = state.segments.get(dim.id)
        from_ = current[0] if current else None
        state.segments[dim.id] = [to, at, from_]
        view = view or MetricView(state, at, self.cal, self.plan.models)
        return segment_changed(
            client_id=state.client_id, dimension=dim.id, ruleset=rs.name, version=rs.version,
            at=at, from_=from_, to=to, rule=rule, cause=cause,
            metrics={m: view.out(m) for m in self._event_metrics[dim.id]}, receipt_id=receipt_id,
            source=self.source,
        )


def _population_stats(rulesets: list[RuleSet]) -> dict[str, Stat]:
    """Every statistic the rule sets read; one name, one definition."""
    out: dict[str, Stat] = {}
    owner: dict[str, str] = {}
    for rs in rulesets:
        for name, stat in rs.population.items():
            if name in out and out[name] != stat:
                raise RuleSetError(f"population statistic {name!r} is defined differently by "
                                   f"{owner[name]} too", rs.path, None, f"population.{name}")
            out[name], owner[name] = stat, rs.path
    return out


def _without_population(rulesets: list[RuleSet]) -> list[RuleSet]:
    """The rule sets without the dimensions that read the population (no snapshot yet)."""
    out = []
    for rs in rulesets:
        dims = [d for d in rs.dimensions if not d.population]
        if dims:
            out.append(rs if len(dims) == len(rs.dimensions) else dataclasses.replace(rs, dimensions=dims))
    return out
