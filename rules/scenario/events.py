"""The events scenarios publish (CloudEvents 1.0 on ``loyalty.scenario-actions``) and their ids.

Every id is a hash of what the event is about, so an event computed twice (a redelivery, a
restart, replay against the stream) is the same event and consumers drop duplicates:

* ``loyalty.scenario.action``: hash of (trigger id, scenario id);
* ``loyalty.scenario.converted``: hash of the action id (the first sale in the window);
* ``loyalty.scenario.responded``: hash of the action id (the first response to it);
* ``loyalty.scenario.revenue``: hash of (action id, receipt id), one per sale within the
  action's response window: the report's revenue is their sum.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from rules.calendar import iso, to_epoch
from rules.metrics import money_text
from rules.scenario.model import CENT, Action, QuietHours

ACTION_TYPE = "loyalty.scenario.action"
CONVERSION_TYPE = "loyalty.scenario.converted"
RESPONDED_TYPE = "loyalty.scenario.responded"
REVENUE_TYPE = "loyalty.scenario.revenue"
DEFAULT_SOURCE = "urn:loyalty:scenarios"


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def action_id(trigger_id: str, scenario_id: str) -> str:
    return _hash(trigger_id, scenario_id)


def conversion_id(action: str) -> str:
    return _hash(action, "converted")


def response_id(action: str) -> str:
    return _hash(action, "responded")


def revenue_id(action: str, receipt_id: str) -> str:
    return _hash(action, "revenue", receipt_id)


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


def envelope(kind: str, eid: str, source: str, client_id: str, at: int,
             data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": eid, "source": source, "type": kind, "subject": client_id,
            "time": iso(at), "datacontenttype": "application/json", "data": data}


def outcome_data(client_id: str, scenario: str, campaign: str | None, action: str,
                 action_at: int) -> dict[str, Any]:
    """The fields every conversion, response and revenue event carries."""
    return {"client_id": client_id, "scenario": scenario, "campaign": campaign,
            "action_id": action, "action_time": iso(action_at)}


def conversion(source: str, base: dict[str, Any], receipt_id: str, t: int, amount: int,
               exponent: int, action_at: int) -> dict[str, Any]:
    data = {**base, "receipt_id": receipt_id, "purchased_at": iso(t),
            "days_after": (t - action_at) // 86_400, "amount": money_text(amount, exponent)}
    return envelope(CONVERSION_TYPE, conversion_id(base["action_id"]), source, base["client_id"], t, data)


def revenue(source: str, base: dict[str, Any], receipt_id: str, t: int, amount: int,
            exponent: int) -> dict[str, Any]:
    data = {**base, "receipt_id": receipt_id, "purchased_at": iso(t), "amount": money_text(amount, exponent)}
    return envelope(REVENUE_TYPE, revenue_id(base["action_id"], receipt_id), source, base["client_id"], t, data)


def responded(source: str, base: dict[str, Any], event: str, channel: str, t: int,
              matched: str) -> dict[str, Any]:
    """``matched``: ``action_id`` (the communication named the action) or ``channel`` (a
    response on the action's channel within its response window)."""
    data = {**base, "event": event, "channel": channel, "responded_at": iso(t), "matched_by": matched}
    return envelope(RESPONDED_TYPE, response_id(base["action_id"]), source, base["client_id"], t, data)
