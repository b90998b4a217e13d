"""``loyalty replay --jobs N``: the replay split by client over N worker processes.

Clients are independent, so each process runs :class:`app.batch.replay.Replay`, the same core,
over the lines of its own clients, routed by a stable hash of ``client_id``. A line with no
usable client id (invalid JSON, not an object, an id that is not a string) goes to the
first process, which rejects or counts it exactly as a single process would.

Every line a process writes starts with a sort key, and the parent merges the processes'
files on those keys, so the outputs are byte-identical to ``--jobs 1``. Order ``time``:
``0`` + input and line number for the rejects of validation (file order), ``1`` + the
record's event-time key (:mod:`app.batch.order`) for what applying it writes (each process
sorts its own lines), ``2`` + client id for the final transitions and the segment rows.
Order ``input``: the input and line number for what a line writes (profile lines in file
order, then receipt lines in file order), then the final transitions client by client.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import queue
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from app.batch.engine import build_engine
from app.batch.order import DEFAULT_MEMORY
from app.batch.replay import Replay, ReplayStats, time_order

BATCH = 2000  # lines per message to a worker
_PHASE = {"profiles": b"0", "receipts": b"1", "communications": b"1"}
_FINISH = b"2"
_OUTPUTS = ("changes", "rejects", "segments")


@dataclass(frozen=True)
class Job:
    """What a worker needs to build its engine and its replay (picklable)."""

    rules: list[str]
    params: list[str]
    tz: str
    as_of: datetime
    order: str = "time"  # "time" or "input"
    earliest: int | None = None
    sort_memory: int = DEFAULT_MEMORY  # bytes, per process


class WorkerFailed(RuntimeError):
    """A replay worker process failed; the message names it and its error."""


def shard_of(raw: bytes, jobs: int) -> int:
    """The worker of a line: a stable hash of its ``client_id``, 0 when it has none."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    cid = obj.get("client_id") if isinstance(obj, dict) else None
    if not isinstance(cid, str):
        return 0
    return zlib.crc32(cid.encode()) % jobs


def _client_key(client_id: str) -> bytes:
    # hex of the UTF-8 bytes sorts as the ids do (code point order) and holds no space
    return _FINISH + client_id.encode().hex().encode()


def _work(job: Job, inbox: Any, outdir: Path, k: int) -> tuple[ReplayStats, int]:
    engine = build_engine(job.rules, job.params, job.tz)
    key = [b""]  # sort key of what is written now
    with open(outdir / f"changes.{k}", "wb") as changes, open(outdir / f"rejects.{k}", "wb") as rejects:
        def on_change(event: dict[str, Any]) -> None:
            changes.write(key[0] + b" " + orjson.dumps(event) + b"\n")

        def on_reject(row: dict[str, Any]) -> None:
            rejects.write(key[0] + b" " + orjson.dumps(row) + b"\n")

        replay = Replay(engine, job.as_of, on_change, on_reject, earliest=job.earliest)

        def received() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
            while (message := inbox.get()) is not None:
                yield message

        if job.order == "time":
            def admit(source: str, line_no: int) -> None:
                key[0] = b"0" + _PHASE[source] + b"%012d" % line_no

            def apply(sort_key: bytes) -> None:
                key[0] = b"1" + sort_key.hex().encode()

            time_order(replay, received(), job.sort_memory, admit, apply)
        else:
            for source, batch in received():
                for line_no, raw in batch:
                    key[0] = _PHASE[source] + b"%012d" % line_no
                    replay.line(raw, line_no, source)

        def before(cid: str) -> None:
            key[0] = _client_key(cid)

        rows = replay.finish(before)
    with open(outdir / f"segments.{k}", "wb") as segments:
        for row in rows:
            segments.write(_client_key(row["client_id"]) + b" " + orjson.dumps(row) + b"\n")
    return replay.stats, engine.errors


def _worker(job: Job, inbox: Any, results: Any, outdir: str, k: int) -> None:
    try:
        stats, errors = _work(job, inbox, Path(outdir), k)
    except BaseException as exc:  # the parent reports it and stops the run
        results.put((k, None, 0, f"{type(exc).__name__}: {exc}"))
        raise
    results.put((k, stats, errors, None))


def _merged(paths: list[Path]) -> Iterator[bytes]:
    """The JSON parts of the files' lines, in the order of their sort keys."""
    with ExitStack() as stack:
        files = [stack.enter_context(open(p, "rb")) for p in paths]
        for line in heapq.merge(*files, key=lambda ln: ln[:ln.index(b" ")]):
            yield line[line.index(b" ") + 1:]


def _sum(stats: list[ReplayStats]) -> ReplayStats:
    total = ReplayStats()
    for st in stats:
        for f in fields(ReplayStats):
            value = getattr(st, f.name)
            if isinstance(value, dict):  # rejected, flips...: counts by key
                acc = getattr(total, f.name)
                for key, n in value.items():
                    acc[key] = acc.get(key, 0) + n
            else:
                setattr(total, f.name, getattr(total, f.name) + value)
    return total


def run(job: Job, jobs: int, inputs: Iterable[tuple[str, Iterable[tuple[int, bytes]]]],
        outputs: dict[str, IO[bytes] | None]) -> tuple[ReplayStats, int]:
    """Replay ``inputs`` (("profiles" | "receipts", numbered lines), in order) over ``jobs``
    processes; write the merged outputs; return the summed stats and rule errors."""
    ctx = mp.get_context("spawn")  # no state inherited from the parent
    with tempfile.TemporaryDirectory(prefix="loyalty-replay-") as tmp:
        results = ctx.Queue()
        inboxes = [ctx.Queue(maxsize=8) for _ in range(jobs)]
        procs = [ctx.Process(target=_worker, args=(job, inboxes[k], results, tmp, k), daemon=True)
                 for k in range(jobs)]
        for p in procs:
            p.start()
        try:
            for source, lines in inputs:
                batches: list[list[tuple[int, bytes]]] = [[] for _ in range(jobs)]
                for line_no, raw in lines:
                    k = shard_of(raw, jobs)
                    batches[k].append((line_no, raw))
                    if len(batches[k]) >= BATCH:
                        _send(inboxes[k], (source, batches[k]), procs[k], results)
                        batches[k] = []
                for k, batch in enumerate(batches):
                    if batch:
                        _send(inboxes[k], (source, batch), procs[k], results)
            for k in range(jobs):
                _send(inboxes[k], None, procs[k], results)
            done = _collect(results, procs)
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
        failed = [f"worker {k}: {err}" for k, _, _, err in done if err is not None]
        if failed:
            raise WorkerFailed("; ".join(failed))
        for name in _OUTPUTS:
            out = outputs.get(name)
            if out is not None:
                out.writelines(_merged([Path(tmp) / f"{name}.{k}" for k in range(jobs)]))
        return _sum([st for _, st, _, _ in done if st is not None]), sum(e for _, _, e, _ in done)


def _send(inbox: Any, message: Any, proc: Any, results: Any) -> None:
    """Put with a liveness check: a dead worker must not hang the parent on a full queue."""
    while True:
        try:
            inbox.put(message, timeout=1.0)
            return
        except queue.Full:
            if not proc.is_alive():
                try:
                    _, _, _, err = results.get(timeout=1.0)
                except queue.Empty:
                    err = f"exit code {proc.exitcode}"
                raise WorkerFailed(f"a replay worker stopped: {err}") from None


def _collect(results: Any, procs: list[Any]) -> list[tuple[int, ReplayStats | None, int, str | None]]:
    """Every worker's report; a worker that died without one is reported by its exit code."""
    done: dict[int, tuple[int, ReplayStats | None, int, str | None]] = {}
    while len(done) < len(procs):
        try:
            report = results.get(timeout=1.0)
            done[report[0]] = report
        except queue.Empty:
            dead = [k for k, p in enumerate(procs) if k not in done and not p.is_alive()]
            if dead:  # its report, if it wrote one, is in the pipe by now
                try:
                    report = results.get(timeout=2.0)
                    done[report[0]] = report
                except queue.Empty:
                    for k in dead:
                        done[k] = (k, None, 0, f"exit code {procs[k].exitcode} with no report")
    return [done[k] for k in sorted(done)]
