"""Event-time order for batch inputs: the sort key of a record and an external sort.

``loyalty replay`` and ``loyalty produce`` apply (send) records in event-time order,
whatever the order of the lines. The key of a record is

    (event time, kind, an 8-byte hash of the record's bytes)

as 17 bytes that sort as the tuple does: the event time (``occurred_at`` of a receipt,
``updated_at`` of a profile; a profile without ``updated_at`` sorts before everything), then
profiles before receipts before
communication events at the same second, then the content, so records of the same
second have one order for every permutation of the lines. Identical lines have identical
keys (their order does not matter: the second is a duplicate).

:class:`ExternalSort` sorts any number of records in bounded memory: records are kept in
memory up to ``memory_bytes``, then sorted and spilled to a temporary file; iteration
merges the runs (``heapq.merge``). Written here rather than with DuckDB or PyArrow: the
records are opaque byte strings with a precomputed byte key, which the standard library
sorts and merges directly (a table engine would add a dependency and a copy of every line).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PROFILE = b"\x00"
RECEIPT = b"\x01"
COMMUNICATION = b"\x02"
NO_TIME = -(2**62)  # a profile without updated_at: before any instant
_OFFSET = 2**63
_HEAD = struct.Struct(">17sQI")  # key, line number, length of the record
DEFAULT_MEMORY = 256 * 1024 * 1024  # bytes of records held before a run is spilled
_OVERHEAD = 120  # bytes of Python objects per record held (tuple, bytes headers)


def sort_key(at: int, kind: bytes, raw: bytes) -> bytes:
    """The 17-byte key of a record at epoch second ``at`` (see the module docstring)."""
    return (at + _OFFSET).to_bytes(8, "big") + kind + hashlib.blake2b(raw, digest_size=8).digest()


def key_time(key: bytes) -> int:
    """The event time (epoch s) a key was made with."""
    return int.from_bytes(key[:8], "big") - _OFFSET


class ExternalSort:
    """Add (key, line number, record) triples; iterate them in key order, once."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY, tmpdir: str | None = None) -> None:
        self.memory_bytes = memory_bytes
        self._tmpdir = tmpdir
        self._held: list[tuple[bytes, int, bytes]] = []
        self._held_bytes = 0
        self._runs: list[Path] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.count = 0
        self.spilled_runs = 0

    def add(self, key: bytes, line_no: int, raw: bytes) -> None:
        self._held.append((key, line_no, raw))
        self._held_bytes += len(raw) + _OVERHEAD
        self.count += 1
        if self._held_bytes >= self.memory_bytes:
            self._spill()

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="loyalty-sort-", dir=self._tmpdir)
        self._held.sort()
        path = Path(self._dir.name) / f"run-{len(self._runs):05d}"
        with open(path, "wb", buffering=1 << 20) as fh:
            for key, line_no, raw in self._held:
                fh.write(_HEAD.pack(key, line_no, len(raw)))
                fh.write(raw)
        self._runs.append(path)
        self.spilled_runs += 1
        self._held = []
        self._held_bytes = 0

    def __iter__(self) -> Iterator[tuple[bytes, int, bytes]]:
        try:
            if not self._runs:
                self._held.sort()
                held, self._held = self._held, []
                yield from held
                return
            if self._held:
                self._spill()
            with contextlib.ExitStack() as stack:
                files: list[IO[bytes]] = [stack.enter_context(open(p, "rb", buffering=1 << 20))
                                          for p in self._runs]
                yield from heapq.merge(*(_read_run(fh) for fh in files))
        finally:
            self.close()

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
        self._runs = []


def _read_run(fh: IO[bytes]) -> Iterator[tuple[bytes, int, bytes]]:
    size = _HEAD.size
    while head := fh.read(size):
        key, line_no, length = _HEAD.unpack(head)
        yield key, line_no, fh.read(length)
