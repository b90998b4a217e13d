"""Wire formats: the internal client-events envelope, table values, DLQ headers.

* ``loyalty.client-events`` values: one kind byte then the payload: ``R`` + receipt JSON,
  ``P`` + profile JSON, ``T`` + 8-byte due instant (a tick from the due scanner).
* ``clients`` table values: 8-byte next-due instant (0: none), the client record (JSON),
  then, if the client has scenario state, a newline and that state (JSON; orjson never
  writes a raw newline, so the first one separates them). One value per client: the
  segments and the scenario decisions they triggered are stored in one write.
"""

from __future__ import annotations

import struct

import orjson

from rules import RejectedInput

RECEIPT, PROFILE, TICK = b"R", b"P", b"T"
_DUE = struct.Struct(">q")


def envelope(kind: bytes, payload: bytes) -> bytes:
    return kind + payload


def tick(due: int) -> bytes:
    return TICK + _DUE.pack(due)


def table_value(next_due: int | None, state: bytes, scenarios: bytes | None = None) -> bytes:
    head = _DUE.pack(next_due or 0) + state
    return head + b"\n" + scenarios if scenarios else head


def table_due(value: bytes) -> int | None:
    """The next-due instant a table value starts with (None: nothing due)."""
    return int(_DUE.unpack_from(value)[0]) or None


def split_table_value(value: bytes) -> tuple[int | None, bytes]:
    """(next due, client record) of a table value."""
    end = value.find(b"\n", _DUE.size)
    return table_due(value), value[_DUE.size:end] if end >= 0 else value[_DUE.size:]


def scenario_part(value: bytes) -> bytes | None:
    """The scenario state of a table value (None: the client has none)."""
    end = value.find(b"\n", _DUE.size)
    return value[end + 1:] if end >= 0 else None


def tick_due(value: bytes) -> int:
    return int(_DUE.unpack_from(value, 1)[0])


def dlq_headers(exc: RejectedInput, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("reason", exc.reason.encode()),
        ("detail", exc.detail.encode()),
        ("field", (exc.field or "").encode()),
        ("source-topic", topic.encode()),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)
