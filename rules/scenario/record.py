"""A client's scenario state (the part of its ``clients`` table value after the record),
its serialization, and the read-outs the decisions use. The decisions are
:mod:`rules.scenario_state`'s.

Bytes (JSON): ``a`` per scenario the remembered actions ``[id, send instant, flags
(1 converted, 2 responded), answered instant, channel]`` (version 1 values, ``[id, at,
converted]``, load with the answer dated at the send instant); ``o`` the kept responses
``[event hash, instant, channel, event, action id]``; ``k`` the calendar cursor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

STATE_VERSION = 2
SEEN_KEPT = 64  # trigger ids remembered per client (redelivery horizon)
PENDING_MAX = 512  # receipts after the latest trigger kept per client (backfills: oldest dropped)
RESPONSES_KEPT = 64  # responses after the latest trigger kept per client
ATTEMPTS_KEPT = 12  # actions remembered per client and scenario


@dataclass(slots=True)
class Attempt:
    action_id: str
    at: int  # send instant, epoch s
    converted: bool = False
    answered: int = 0  # earliest instant of a response or a converting sale (0: none yet)
    responded: bool = False  # its responded event was made
    channel: str = ""


@dataclass(slots=True)
class Response:
    h: int  # hash of the communication's event id
    t: int
    channel: str
    event: str
    action_id: str  # "": matched by channel and response window


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
    responses: list[Response] = field(default_factory=list)  # after the watermark, by time
    calendar: int = 0  # calendar occurrences up to this instant are decided (0: none yet)


@dataclass(slots=True)
class Step:
    actions: list[dict[str, Any]] = field(default_factory=list)
    conversions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # responded and revenue events
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (scenario, reason)
    changed: bool = False  # the state must be stored

    def add(self, other: Step) -> None:
        self.actions += other.actions
        self.conversions += other.conversions
        self.outcomes += other.outcomes
        self.skipped += other.skipped
        self.changed = self.changed or other.changed

    @property
    def events(self) -> list[dict[str, Any]]:
        """Everything to publish: actions, conversions, then responses and revenue."""
        return [*self.actions, *self.conversions, *self.outcomes]


@dataclass(slots=True)
class Fired:
    """What fires a scenario: a change event or a calendar occurrence."""

    id: str  # the trigger id (the change event's id, or the calendar occurrence's)
    at: int  # the trigger instant
    metrics: dict[str, Any] | None  # the change event's data.metrics; None: read the record
    data: dict[str, Any]  # the action's data.trigger


def dumps(state: ClientScenarios) -> bytes:
    doc: dict[str, Any] = {
        "v": STATE_VERSION, "c": state.client_id, "rev": state.revenue, "vis": state.visits,
        "exp": state.exponent, "r": [[p.receipt_id, p.t, p.amount, int(p.sale)] for p in state.receipts],
        "i": state.ids, "m": state.max_seen, "w": state.watermark, "rq": state.receipt_seq, "cq": state.change_seq,
        "s": state.seen,
        "a": {k: [[a.action_id, a.at, int(a.converted) | 2 * int(a.responded), a.answered, a.channel]
                  for a in v] for k, v in state.attempts.items()},
    }
    if state.responses:
        doc["o"] = [[r.h, r.t, r.channel, r.event, r.action_id] for r in state.responses]
    if state.calendar:
        doc["k"] = state.calendar
    return orjson.dumps(doc)


def _attempt(a: list[Any]) -> Attempt:
    if len(a) == 3:  # version 1: [id, at, converted]; a conversion's instant was not kept
        return Attempt(a[0], a[1], bool(a[2]), a[1] if a[2] else 0)
    return Attempt(a[0], a[1], bool(a[2] & 1), a[3], bool(a[2] & 2), a[4])


def loads(raw: bytes) -> ClientScenarios:
    d = orjson.loads(raw)
    return ClientScenarios(
        d["c"], d["rev"], d["vis"], d["exp"], [Purchase(r[0], r[1], r[2], bool(r[3])) for r in d["r"]],
        [(h, t) for h, t in d["i"]], d["m"], d["w"], d["rq"], d["cq"], list(d["s"]),
        {k: [_attempt(a) for a in v] for k, v in d["a"].items()},
        [Response(*r) for r in d.get("o", ())], d.get("k", 0))


def unanswered(attempts: list[Attempt], at: int | None = None) -> int:
    """Consecutive actions not answered (at or before ``at``, if given), newest first."""
    n = 0
    for a in reversed(attempts):
        if a.answered and (at is None or a.answered <= at):
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
