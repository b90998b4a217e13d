"""``loyalty replay``: the core in-process over JSON Lines files, no Kafka.

Receipts are applied in file order (the order a Kafka partition would deliver them), each
client's time-based transitions up to ``as_of`` are fired, and the results are written.
Profiles, if given, are applied first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson

from app.wire.codecs import dlq_copy
from rules import ClientState, Engine, RejectedInput, loads, parse_profile, parse_receipt
from rules.calendar import to_epoch
from rules.receipts import known_profile_fields
from rules.state import Outcome


@dataclass
class ReplayStats:
    lines: int = 0
    applied: int = 0
    duplicates: int = 0
    anonymous: int = 0
    profiles: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    clients: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class Replay:
    """Holds client states; feed it lines, then ``finish``."""

    engine: Engine
    as_of: datetime
    on_change: Callable[[dict[str, Any]], None]
    on_reject: Callable[[dict[str, Any]], None]
    states: dict[str, ClientState] = field(default_factory=dict)
    stats: ReplayStats = field(default_factory=ReplayStats)

    def _reject(self, source: str, line_no: int, raw: bytes, exc: RejectedInput) -> None:
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        kept, extra = dlq_copy(raw)
        self.on_reject({"source": source, "line": line_no, **exc.as_dict(),
                        "raw": kept.decode("utf-8", "replace"), **{k: v.decode() for k, v in extra}})

    def profile_line(self, raw: bytes, line_no: int, source: str = "profiles") -> None:
        try:
            profile = parse_profile(loads(raw), self.as_of)
        except RejectedInput as exc:
            self._reject(source, line_no, known_profile_fields(raw), exc)
            return
        result = self.engine.profile(self.states.get(profile.client_id), profile)
        assert result.state is not None
        self.states[profile.client_id] = result.state
        self.stats.profiles += 1
        self._emit(result.events)

    def receipt_line(self, raw: bytes, line_no: int, source: str = "receipts") -> None:
        self.stats.lines += 1
        try:
            receipt = parse_receipt(loads(raw), self.as_of)
            cid = receipt.client_id
            result = self.engine.receipt(self.states.get(cid) if cid else None, receipt)
        except RejectedInput as exc:
            self._reject(source, line_no, raw, exc)
            return
        if result.outcome is Outcome.ANONYMOUS:
            self.stats.anonymous += 1
            return
        assert result.state is not None and cid is not None
        self.states[cid] = result.state
        if result.outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.applied += 1
        self._emit(result.events)

    def _emit(self, events: list[dict[str, Any]]) -> None:
        self.stats.changes += len(events)
        for event in events:
            self.on_change(event)

    def finish(self, before: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Fire transitions up to as_of, client by client in id order (``before`` is told
        each id first); return one summary row per segmented client."""
        until = to_epoch(self.as_of)
        rows = []
        for cid in sorted(self.states):
            if before is not None:
                before(cid)
            state = self.states[cid]
            self._emit(self.engine.advance(state, until))
            if state.segments:
                rows.append({"client_id": cid, "segments": self.engine.segments(state),
                             "metrics": self.engine.metrics(state, max(until, state.clock))})
        self.stats.clients = len(rows)
        return rows


def read_lines(stream: IO[bytes]) -> Iterable[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            yield n, line


def progress(iterable: Iterable[Any], total_bytes: int | None, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    bar: Iterable[Any] = tqdm(iterable, unit=" lines", file=sys.stderr, mininterval=0.5)
    return bar


def write_jsonl(stream: IO[bytes], rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        stream.write(orjson.dumps(row))
        stream.write(b"\n")
