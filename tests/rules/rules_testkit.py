"""Shared builders for the tests of the pure core (not a test module: no ``test_`` prefix)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rules import Engine, load_ruleset, parse_receipt
from rules.calendar import iso, to_epoch
from rules.inputs.receipts import Receipt
from rules.record.state import ClientState

DAY = 86_400
MSK = "Europe/Moscow"


def ts(text: str) -> int:
    """Epoch seconds of an ISO 8601 instant with offset."""
    return to_epoch(datetime.fromisoformat(text))


def at(epoch: int) -> str:
    """ISO text with offset for receipts, from epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def receipt_doc(rid: str, when: str | int, total: Any = "100.00", *, client: str | None = "c-1",
                kind: str = "sale", items: list[dict[str, Any]] | None = None,
                original: str | None = None, store: str | None = "s-1",
                currency: str = "RUB") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "receipt_id": rid, "client_id": client, "store_id": store,
        "occurred_at": at(when) if isinstance(when, int) else when,
        "type": kind, "total": total, "currency": currency,
    }
    if items is not None:
        doc["items"] = items
    if original is not None:
        doc["original_receipt_id"] = original
    return doc


def rcpt(rid: str, when: str | int, total: Any = "100.00", **kw: Any) -> Receipt:
    return parse_receipt(receipt_doc(rid, when, total, **kw), None)


def engine(*presets: str, tz: str = "UTC") -> Engine:
    return Engine([load_ruleset(p) for p in presets], tz=tz)


def feed(eng: Engine, receipts: list[Receipt],
         state: ClientState | None = None) -> tuple[ClientState, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    for r in receipts:
        res = eng.receipt(state, r)
        state = res.state
        events += res.events
    assert state is not None
    return state, events


def changes(events: list[dict[str, Any]], dimension: str | None = None) -> list[tuple[str, str]]:
    """(time, to) of each change, optionally of one dimension."""
    return [(e["time"], e["data"]["to"]) for e in events
            if dimension is None or e["data"]["dimension"] == dimension]


def daily(start: int, n: int, step_days: float = 1.0) -> list[int]:
    return [start + int(i * step_days * DAY) for i in range(n)]


__all__ = ["DAY", "MSK", "at", "changes", "daily", "engine", "feed", "iso", "rcpt",
           "receipt_doc", "timedelta", "ts"]
