"""``loyalty replay``: the core in-process over input files, no Kafka.

Order ``time`` (the default): every line is validated first (a rejected line is reported
at once, in file order), then the valid ones are applied in event-time order
(:mod:`app.batch.order`), so any permutation of the same lines gives the same changes,
segments and summary. Order ``input``: lines are applied as they come, profiles first
(what a stream sees). Then each client's time-based transitions up to ``as_of`` are fired
and the results are written.

Population snapshots (rule sets that read ``population.<name>``): the first at the first
cadence instant after the first purchase, then at every cadence instant up to ``as_of``
(before the inputs dated at or after it), plus one at ``as_of`` itself. Each is computed from every client's
metrics at its instant, then every client is evaluated against it (cause ``population``),
in client id order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson

from app.batch.order import COMMUNICATION, NO_TIME, PROFILE, RECEIPT, ExternalSort, sort_key
from app.wire.codecs import dlq_copy
from rules import ClientState, Engine, RejectedInput, loads, parse_profile, parse_receipt
from rules import population as pop
from rules.calendar import to_epoch
from rules.inputs.communications import parse_communication
from rules.inputs.receipts import rejected_profile_copy
from rules.metrics import MetricView
from rules.record.state import MemoryArchive, Outcome

MONTH_S = 2_629_746  # a mean Gregorian month (365.2425 / 12 days), for flip rates


@dataclass
class ReplayStats:
    lines: int = 0
    applied: int = 0
    duplicates: int = 0
    anonymous: int = 0
    profiles: int = 0
    communications: int = 0  # communication events applied
    communication_duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    clients: int = 0
    # per dimension: changes from a segment to another (flips), and the seconds its clients
    # were segmented (each from its first segment to as_of); see flip_rates
    flips: dict[str, int] = field(default_factory=dict)
    segmented_seconds: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def flip_rates(self) -> dict[str, float]:
        """Per dimension: flips per segmented client per month of event time, i.e. flips /
        the client-months its clients were segmented (months of 30.436875 days)."""
        return {dim: round(self.flips.get(dim, 0) * MONTH_S / seconds, 4)
                for dim, seconds in sorted(self.segmented_seconds.items()) if seconds > 0}


@dataclass
class Replay:
    """Holds client states; feed it lines, then ``finish``."""

    engine: Engine
    as_of: datetime
    on_change: Callable[[dict[str, Any]], None]
    on_reject: Callable[[dict[str, Any]], None]
    states: dict[str, ClientState] = field(default_factory=dict)
    stats: ReplayStats = field(default_factory=ReplayStats)
    earliest: int | None = None  # lower bound on event times (epoch s; None: the contract's)
    archive: MemoryArchive = field(default_factory=MemoryArchive)  # rows left the records
    cadence: str = "day"  # population snapshots (rules.population.CADENCES)
    next_snapshot: int | None = None  # epoch s; None: no purchase yet (or no population rules)
    scenarios: Any = None  # app.batch.replay_scenarios.ScenarioFeed (None: no scenarios)
    on_fact: Callable[[dict[str, Any]], None] | None = None  # receipt facts (--facts-out)

    def population_until(self, t: int) -> None:
        """Take the snapshots due at or before ``t`` (before an input at ``t`` is applied)."""
        while self.next_snapshot is not None and self.next_snapshot <= t:
            self.take_snapshot(self.next_snapshot)
            self.next_snapshot = pop.next_instant(self.next_snapshot, self.cadence, self.engine.cal)

    def take_snapshot(self, instant: int) -> None:
        engine = self.engine
        spec = engine.spec
        agg = pop.initialize(spec)
        for state in self.states.values():
            pop.update(spec, agg, MetricView(state, instant, engine.cal))
        snap = pop.snapshot(spec, instant, agg)
        if snap is None:
            return
        engine.set_population(snap)
        self.stats.snapshots += 1
        for cid in sorted(self.states):
            self._calendar(cid, instant - 1)
            self._emit(engine.catch_up(self.states[cid]))

    def _reject(self, source: str, line_no: int, raw: bytes, exc: RejectedInput) -> None:
        self.stats.rejected[exc.reason] = self.stats.rejected.get(exc.reason, 0) + 1
        kept, extra = dlq_copy(raw)
        self.on_reject({"source": source, "line": line_no, **exc.as_dict(),
                        "raw": kept.decode("utf-8", "replace"), **{k: v.decode() for k, v in extra}})

    def admit(self, raw: bytes, line_no: int, source: str) -> bytes | None:
        """Validate a line (order ``time``, first pass): its sort key, or None when it is
        rejected (reported now). :meth:`profile_line` / :meth:`receipt_line` apply it later."""
        try:
            if source == "profiles":
                profile = parse_profile(loads(raw), self.as_of, self.earliest)
                at = NO_TIME if profile.updated_at is None else to_epoch(profile.updated_at)
                return sort_key(at, PROFILE, raw)
            if source == "communications":
                return sort_key(parse_communication(loads(raw), self.as_of, self.earliest).at,
                                COMMUNICATION, raw)
            receipt = parse_receipt(loads(raw), self.as_of, self.earliest)
            return sort_key(receipt.at, RECEIPT, raw)
        except RejectedInput as exc:
            if source == "profiles":
                self._reject(source, line_no, rejected_profile_copy(raw), exc)
            elif source == "communications":
                self._reject(source, line_no, raw, exc)
            else:
                self.stats.lines += 1
                self._reject(source, line_no, raw, exc)
            return None

    def line(self, raw: bytes, line_no: int, source: str) -> None:
        if source == "communications":
            self.communication_line(raw, line_no, source)
        else:
            (self.profile_line if source == "profiles" else self.receipt_line)(raw, line_no, source)

    def communication_line(self, raw: bytes, line_no: int, source: str = "communications") -> None:
        try:
            comm = parse_communication(loads(raw), self.as_of, self.earliest)
            self.population_until(comm.at)
            self._calendar(comm.client_id, comm.at)
            result = self.engine.communication(self.states.get(comm.client_id), comm)
        except RejectedInput as exc:
            self._reject(source, line_no, raw, exc)
            return
        assert result.state is not None
        self.states[comm.client_id] = result.state
        if result.outcome is Outcome.DUPLICATE:
            self.stats.communication_duplicates += 1
        else:
            self.stats.communications += 1
            if self.scenarios is not None:
                self.scenarios.communication(comm)
        self._emit(result.events)

    def profile_line(self, raw: bytes, line_no: int, source: str = "profiles") -> None:
        try:
            profile = parse_profile(loads(raw), self.as_of, self.earliest)
        except RejectedInput as exc:
            self._reject(source, line_no, rejected_profile_copy(raw), exc)
            return
        if profile.updated_at is not None:
            self.population_until(to_epoch(profile.updated_at))
        known = self.states.get(profile.client_id)
        if known is not None:
            self._calendar(profile.client_id, known.clock if profile.updated_at is None
                           else to_epoch(profile.updated_at))
        result = self.engine.profile(self.states.get(profile.client_id), profile)
        assert result.state is not None
        self.states[profile.client_id] = result.state
        self.stats.profiles += 1
        self._emit(result.events)

    def receipt_line(self, raw: bytes, line_no: int, source: str = "receipts") -> None:
        self.stats.lines += 1
        try:
            receipt = parse_receipt(loads(raw), self.as_of, self.earliest)
            cid = receipt.client_id
            self.population_until(receipt.at)
            self._calendar(cid, receipt.at)
            result = self.engine.receipt(self.states.get(cid) if cid else None, receipt,
                                         self.archive.reader(cid) if cid else None)
            if result.archive:
                assert cid is not None
                self.archive.add(cid, result.archive)
        except RejectedInput as exc:
            self._reject(source, line_no, raw, exc)
            return
        if result.outcome is Outcome.ANONYMOUS:
            self.stats.anonymous += 1
            return
        assert result.state is not None and cid is not None
        self.states[cid] = result.state
        if self.next_snapshot is None and self.engine.spec.stats and result.state.has_purchase:
            self.next_snapshot = pop.next_instant(receipt.at, self.cadence, self.engine.cal)
        if result.outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.applied += 1
            if self.on_fact is not None:
                self.on_fact(self.engine.fact(result.state, receipt))
            if self.scenarios is not None:
                self.scenarios.receipt(receipt)
        self._emit(result.events)

    def _calendar(self, cid: str | None, until: int) -> None:
        """Calendar scenarios due by ``until`` first, each at its instant (replay_scenarios)."""
        if self.scenarios is not None and cid is not None and cid in self.states:
            self._emit(self.scenarios.calendar(self.states[cid], until), fed=True)

    def _emit(self, events: list[dict[str, Any]], fed: bool = False) -> None:
        """``fed``: the scenario runner has seen them already."""
        if self.scenarios is not None and not fed:
            self.scenarios.changes(events, self.states)
        stats = self.stats
        stats.changes += len(events)
        for event in events:
            data = event["data"]
            dim = data["dimension"]
            if data["from"] is None:  # the client's first segment: segmented from now to as_of
                held = to_epoch(self.as_of) - to_epoch(datetime.fromisoformat(event["time"]))
                stats.segmented_seconds[dim] = stats.segmented_seconds.get(dim, 0) + max(0, held)
            else:
                stats.flips[dim] = stats.flips.get(dim, 0) + 1
            self.on_change(event)

    def finish(self, before: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Fire transitions up to as_of, client by client in id order (``before`` is told
        each id first); return one summary row per segmented client."""
        until = to_epoch(self.as_of)
        self.population_until(until)  # as the stream's watermark follows the clock when idle
        last = self.engine.population
        if self.next_snapshot is not None and (last is None or last.instant < until):
            self.take_snapshot(until)
        rows = []
        for cid in sorted(self.states):
            if before is not None:
                before(cid)
            state = self.states[cid]
            self._calendar(cid, until)
            self._emit(self.engine.advance(state, until))
            if state.segments:
                rows.append({"client_id": cid, "segments": self.engine.segments(state),
                             "metrics": self.engine.metrics(state, max(until, state.clock))})
        self.stats.clients = len(rows)
        return rows


def time_order(replay: Replay, inputs: Iterable[tuple[str, Iterable[tuple[int, bytes]]]],
               memory_bytes: int, on_admit: Callable[[str, int], None] | None = None,
               on_apply: Callable[[bytes], None] | None = None) -> ExternalSort:
    """Order ``time``: validate every line of ``inputs`` ((source, numbered lines)...), then
    apply the valid ones in event-time order. ``on_admit`` is told each line's source and
    number before it is validated, ``on_apply`` each valid line's key before it is applied.
    Returns the sorter (its ``count`` and ``spilled_runs``)."""
    sorter = ExternalSort(memory_bytes)
    try:
        for source, lines in inputs:
            for line_no, raw in lines:
                if on_admit is not None:
                    on_admit(source, line_no)
                key = replay.admit(raw, line_no, source)
                if key is not None:
                    sorter.add(key, line_no, raw)
        for key, line_no, raw in sorter:
            if on_apply is not None:
                on_apply(key)
            replay.line(raw, line_no, SOURCES[key[8:9]])
    finally:
        sorter.close()
    return sorter


SOURCES = {PROFILE: "profiles", RECEIPT: "receipts", COMMUNICATION: "communications"}


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
