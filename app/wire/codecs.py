"""Wire formats: the internal client-events envelope, table values, DLQ headers.

* ``loyalty.client-events`` values: one kind byte then the payload: ``R`` + receipt JSON,
  ``P`` + profile JSON, ``C`` + communication event JSON, ``K`` + a one-off campaign
  (app.batch.campaign), ``T`` + 8-byte due instant (a
  tick from the due scanner), ``Q``
  alone (a probe from the stall monitor: no effect but to reveal a gap, agents.monitor).
* ``clients`` table values: ``0x01``, the 8-byte fingerprint of the rules that evaluated
  the client (:attr:`rules.Engine.fingerprint`), the 8-byte next-due instant (0: none),
  the client record (JSON), then, if the client has scenario state, a newline and that
  state (JSON; orjson never writes a raw newline, so the first one after the head
  separates them). One value per client: the segments and the scenario decisions they
  triggered are stored in one write. Values of earlier versions have no marker and no
  fingerprint (they start with the due instant, whose first byte is always 0) and are
  still read.
"""

from __future__ import annotations

import hashlib
import struct

import orjson

from rules import RejectedInput

RECEIPT, PROFILE, TICK, PROBE, COMMUNICATION = b"R", b"P", b"T", b"Q", b"C"
CAMPAIGN = b"K"  # + JSON {scenario, campaign, dimension, segment, at}: app.batch.campaign
_DUE = struct.Struct(">q")


def envelope(kind: bytes, payload: bytes) -> bytes:
    return kind + payload


def tick(due: int, until: int | None = None) -> bytes:
    """A due tick: fire the client's time-based changes up to ``until`` (>= ``due``; the
    event-time watermark when it was sent, see agents.watermark). Without ``until`` (a
    record of an older version), up to the worker's clock."""
    return TICK + _DUE.pack(due) + (b"" if until is None else _DUE.pack(until))


_V1 = b"\x01"  # table value format marker (the first byte of an old value is 0)
_RULES = slice(1, 9)  # where a marked value keeps the rules fingerprint
_V1_DUE = _RULES.stop  # and its due instant
_OLD_HEAD = _DUE.size
_V1_HEAD = _V1_DUE + _DUE.size


def table_value(next_due: int | None, state: bytes, scenarios: bytes | None = None,
                rules: bytes | None = None) -> bytes:
    """A table value; ``rules``: the 8-byte fingerprint (None: the old format, no marker)."""
    due = _DUE.pack(next_due or 0)
    if rules is None:
        head = due + state
    else:
        if len(rules) != _RULES.stop - _RULES.start:
            raise ValueError("a rules fingerprint has 8 bytes")
        head = _V1 + rules + due + state
    return head + b"\n" + scenarios if scenarios else head


def _head(value: bytes) -> int:
    return _V1_HEAD if value[:1] == _V1 else _OLD_HEAD


def table_due(value: bytes) -> int | None:
    """The next-due instant of a table value (None: nothing due)."""
    return int(_DUE.unpack_from(value, _V1_DUE if value[:1] == _V1 else 0)[0]) or None


def table_rules(value: bytes) -> bytes | None:
    """The fingerprint of the rules that wrote a table value (None: an old value)."""
    return value[_RULES] if value[:1] == _V1 else None


def split_table_value(value: bytes) -> tuple[int | None, bytes]:
    """(next due, client record) of a table value."""
    head = _head(value)
    end = value.find(b"\n", head)
    return table_due(value), value[head:end] if end >= 0 else value[head:]


def scenario_part(value: bytes) -> bytes | None:
    """The scenario state of a table value (None: the client has none)."""
    end = value.find(b"\n", _head(value))
    return value[end + 1:] if end >= 0 else None


def tick_due(value: bytes) -> int:
    return int(_DUE.unpack_from(value, 1)[0])


def tick_until(value: bytes) -> int | None:
    return int(_DUE.unpack_from(value, 9)[0]) if len(value) >= 17 else None


#: Bytes of a rejected message kept in its DLQ copy (and in replay's rejects file).
DLQ_KEEP = 64 * 1024


def dlq_copy(raw: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value to keep of a rejected message: whole, or its first :data:`DLQ_KEEP` bytes
    with the original size and SHA-256 in headers (a copy must fit any topic's limit)."""
    if len(raw) <= DLQ_KEEP:
        return raw, []
    return raw[:DLQ_KEEP], [("original-size", str(len(raw)).encode()),
                            ("original-sha256", hashlib.sha256(raw).hexdigest().encode()),
                            ("truncated", b"true")]


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
