"""CloudEvents 1.0 (structured JSON) for segment changes.

The ``id`` is a hash of what the change is (client, dimension, instant, from, to, rules
version), so a change that is computed twice (redelivery, restart, replay) has the same id
and consumers can drop duplicates.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rules.calendar import iso

EVENT_TYPE = "loyalty.segment.changed"
DEFAULT_SOURCE = "urn:loyalty:segmentation"


def receipt_fact(receipt_id: str, client_id: str, at: int, kind: str, amount: str, currency: str,
                 segments: dict[str, str]) -> dict[str, Any]:
    """What a period report needs of one applied receipt (``loyalty.receipt-facts``): its
    instant, signed net amount (a decimal string: a return is negative), currency and the
    client's segments right after it was evaluated (the segments it is attributed to)."""
    return {"receipt_id": receipt_id, "client_id": client_id, "time": iso(at), "type": kind,
            "amount": amount, "currency": currency, "segments": segments}


def change_id(client_id: str, dimension: str, at: int, from_: str | None, to: str, version: str) -> str:
    key = f"{client_id}\x1f{dimension}\x1f{at}\x1f{from_ or ''}\x1f{to}\x1f{version}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def segment_changed(
    *,
    client_id: str,
    dimension: str,
    ruleset: str,
    version: str,
    at: int,
    from_: str | None,
    to: str,
    rule: str,
    cause: str,
    metrics: dict[str, Any],
    receipt_id: str | None = None,
    source: str = DEFAULT_SOURCE,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "client_id": client_id,
        "dimension": dimension,
        "from": from_,
        "to": to,
        "rule": rule,
        "ruleset": ruleset,
        "rules_version": version,
        "cause": cause,
        "metrics": metrics,
    }
    if receipt_id is not None:
        data["receipt_id"] = receipt_id
    return {
        "specversion": "1.0",
        "id": change_id(client_id, dimension, at, from_, to, version),
        "source": source,
        "type": EVENT_TYPE,
        "subject": client_id,
        "time": iso(at),
        "datacontenttype": "application/json",
        "data": data,
    }
