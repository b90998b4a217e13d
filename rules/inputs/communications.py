"""The third input: communication events, the business's messages and the client's answers.

A CRM, an e-mail/SMS/push service or a call centre reports what happened to a message::

    {"event_id": "esp-81723", "client_id": "c-17", "occurred_at": "2026-03-02T10:15:00+03:00",
     "channel": "email", "event": "opened", "campaign": "spring", "action_id": "act-..."}

``parse_communication`` applies the same rules as ``rules/schemas/communication.schema.json``
and raises :class:`~rules.errors.RejectedInput` with the receipts' reason codes
(``missing_field``, ``bad_type``, ``bad_value``, ``naive_timestamp``, ``bad_timestamp``,
``future_timestamp``, ``too_old_timestamp``) plus ``unknown_channel`` and ``unknown_event``.
The client id is required (a message goes to somebody). Events are deduplicated by
``event_id`` per client (:mod:`rules.record.state`); late and out-of-order events are folded in
like receipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rules.errors import RejectedInput
from rules.inputs.receipts import _client_id, _instant, _str

CHANNELS = ("email", "sms", "push", "messenger", "call")
EVENTS = ("sent", "delivered", "opened", "clicked", "replied", "answered", "unsubscribed", "bounced")
#: The client answered: opened, clicked, replied to a message or took a call.
RESPONSES = frozenset({"opened", "clicked", "replied", "answered"})
#: The business reached out: a message sent (or delivered: a sent event may be missing), a call
#: taken. A bounced message is no contact.
CONTACTS = frozenset({"sent", "delivered", "answered"})


@dataclass(slots=True)
class Communication:
    event_id: str
    client_id: str
    occurred_at: datetime
    channel: str
    event: str
    campaign: str | None
    action_id: str | None  # the scenario action (``data.action_id``) it delivers
    at: int  # occurred_at in epoch seconds


def parse_communication(obj: Any, now: datetime | None, earliest: int | None = None) -> Communication:
    """Validate one decoded communication event. ``now`` bounds future timestamps (None: no
    bound); ``earliest`` (epoch s) past ones (None: 1970-01-01)."""
    if not isinstance(obj, dict):
        raise RejectedInput("not_an_object", "a communication event is a JSON object")
    event_id = _str(obj, "event_id")
    client_id = _client_id(obj, required=True)
    assert event_id is not None and client_id is not None
    channel = obj.get("channel")
    if channel is None:
        raise RejectedInput("missing_field", "channel is required", "channel")
    if channel not in CHANNELS:
        raise RejectedInput("unknown_channel", f"channel must be one of {CHANNELS}", "channel")
    event = obj.get("event")
    if event is None:
        raise RejectedInput("missing_field", "event is required", "event")
    if event not in EVENTS:
        raise RejectedInput("unknown_event", f"event must be one of {EVENTS}", "event")
    if "occurred_at" not in obj:
        raise RejectedInput("missing_field", "occurred_at is required", "occurred_at")
    occurred_at, at = _instant(obj["occurred_at"], "occurred_at", now, earliest)
    campaign = _str(obj, "campaign", required=False)
    action_id = _str(obj, "action_id", required=False)
    return Communication(event_id, client_id, occurred_at, channel, event, campaign, action_id, at)
