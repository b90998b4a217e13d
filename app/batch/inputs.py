"""Input files for ``loyalty replay`` and ``loyalty produce``: JSON Lines, CSV, Parquet.

:func:`records` yields ``(row number, JSON bytes)`` in the input contract's shape, whatever
the file's format, so everything downstream (validation, rejects, ordering) sees one kind
of line. JSON Lines pass through unchanged (a bad line is rejected downstream with its
reason, never here). CSV and Parquet are read with PyArrow in batches (bounded memory),
every value as text, so money stays exact (never parsed as a float here).

A CSV/Parquet row is a whole receipt or one line item of one: consecutive rows with the
same ``receipt_id`` make one receipt with one item per row. Profile rows keep only the
columns the product reads (:data:`rules.inputs.receipts.PROFILE_KEYS`); names, phones and e-mails
in the file are never read into a record.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import IO, Any

import orjson

from app.errors import AppError
from rules.inputs.receipts import PROFILE_KEYS

__all__ = ["FORMATS", "InputError", "detect_format", "parse_columns", "records"]

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
               ".parquet": "parquet", ".pq": "parquet"}
RECEIPT_COLUMNS = ("receipt_id", "client_id", "store_id", "type", "total", "currency", "occurred_at",
                   "original_receipt_id")
ITEM_COLUMNS = ("sku", "category", "qty", "amount")
COMMUNICATION_COLUMNS = ("event_id", "client_id", "occurred_at", "channel", "event", "campaign", "action_id")
REQUIRED = {"receipts": ("receipt_id", "occurred_at", "total"), "profiles": ("client_id",),
            "communications": ("event_id", "client_id", "occurred_at", "channel", "event")}
_KNOWN = frozenset(RECEIPT_COLUMNS + ITEM_COLUMNS + PROFILE_KEYS + COMMUNICATION_COLUMNS)
_BATCH_ROWS = 65_536
_HEADER_FIELD = re.compile(r'\s*"?[\w .\-/()#%]{1,64}"?\s*\Z')


class InputError(AppError):
    """An input file that cannot be read at all (missing, wrong format, missing column)."""


def detect_format(path: str, fmt: str | None) -> str:
    """``fmt`` if given, else from the extension (``.gz`` looked through); JSON Lines otherwise."""
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        return fmt
    name = path[:-3] if path.endswith(".gz") else path
    return _EXTENSIONS.get(os.path.splitext(name)[1].lower(), "jsonl")


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"client_id=CustomerID,occurred_at=InvoiceDate"`` -> ``{"client_id": "CustomerID", ...}``."""
    out: dict[str, str] = {}
    if not spec:
        return out
    for part in spec.split(","):
        name, sep, source = part.partition("=")
        name, source = name.strip(), source.strip()
        if not sep or not name or not source:
            raise InputError(f"--columns: {part!r} is not NAME=SOURCE")
        if name not in _KNOWN:
            raise InputError(f"--columns: unknown field {name!r}; known: {', '.join(sorted(_KNOWN))}")
        out[name] = source
    return out


def records(path: str, kind: str, fmt: str | None = None,
            columns: Mapping[str, str] | None = None) -> Iterator[tuple[int, bytes]]:
    """The records of one input file as ``(row number, JSON bytes)``; ``kind`` is
    ``receipts``, ``profiles`` or ``communications``. Fails with :class:`InputError` on the first ``next()``
    when the file cannot be read at all."""
    fmt = detect_format(path, fmt)
    if path != "-" and not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if fmt == "jsonl":
        yield from _jsonl(path)
        return
    if path == "-":
        raise InputError(f"{fmt} cannot be read from stdin; give a file path")
    rows = _csv_rows(path) if fmt == "csv" else _parquet_rows(path)
    yield from _shape(rows, kind, dict(columns or {}), path)


# -- JSON Lines ---------------------------------------------------------------------------

def _jsonl(path: str) -> Iterator[tuple[int, bytes]]:
    if path == "-":
        yield from _lines(sys.stdin.buffer)
        return
    with open(path, "rb") as raw:
        head = raw.read(4)
        raw.seek(0)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(raw) as fh:
                _sniff(path, fh.read(4096), gzipped=True)
            raw.seek(0)
            with gzip.open(raw) as fh:
                yield from _lines(fh)
            return
        if head == b"PAR1":
            raise InputError(f"{path}: this is a Parquet file, not JSON Lines; name it .parquet "
                             "or pass --format parquet")
        _sniff(path, raw.read(4096), gzipped=False)
        raw.seek(0)
        yield from _lines(raw)


def _sniff(path: str, head: bytes, gzipped: bool) -> None:
    """A CSV header given as JSON Lines would be rejected line by line; say so once instead."""
    first = next((line.strip() for line in head.splitlines() if line.strip()), b"")
    if not first or first[:1] in (b"{", b"["):
        return
    text = first.decode("utf-8", "replace")
    for sep in (",", ";", "\t"):
        fields = text.split(sep)
        if len(fields) >= 2 and all(_HEADER_FIELD.match(f) for f in fields):
            hint = "name it .csv" + (".gz" if gzipped else "")
            raise InputError(f"{path}: this looks like CSV (header {text[:80]!r}), not JSON Lines; "
                             f"{hint} or pass --format csv")


def _lines(stream: IO[bytes] | gzip.GzipFile) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(stream, 1):
        line = line.strip()
        if line:
            yield n, line


# -- CSV and Parquet: rows of text -------------------------------------------------------------

Row = dict[str, Any]


def _csv_rows(path: str) -> Iterator[tuple[int, Row]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    with pa.input_stream(path, compression="detect") as fh:
        header = fh.read(1 << 16).split(b"\n", 1)[0].decode("utf-8-sig", "replace")
    names = [n.strip().strip('"') for n in next(iter(_split_header(header)), [])]
    if not names:
        raise InputError(f"{path}: empty CSV file (no header row)")
    convert = pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
    try:
        reader = pcsv.open_csv(pa.input_stream(path, compression="detect"),
                               read_options=pcsv.ReadOptions(block_size=1 << 22),
                               convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: not a readable CSV file: {exc}") from None
    line = 2  # the header is line 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise InputError(f"{path}: CSV error after line {line - 1}: {exc}") from None
        for row in batch.to_pylist():
            yield line, row
            line += 1


def _split_header(header: str) -> Iterator[list[str]]:
    import csv

    yield from csv.reader([header.rstrip("\r\n")])


def _parquet_rows(path: str) -> Iterator[tuple[int, Row]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pfile = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from None
    n = 1
    for batch in pfile.iter_batches(batch_size=_BATCH_ROWS):
        for row in batch.to_pylist():
            yield n, {k: _text(v) for k, v in row.items()}
            n += 1


def _text(value: Any) -> Any:
    """A Parquet value as the contract's JSON value: exact decimals and ISO instants as text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)  # the shortest text that round-trips: no binary noise in money
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


# -- rows to contract records --------------------------------------------------------------

def _shape(rows: Iterator[tuple[int, Row]], kind: str, columns: dict[str, str],
           path: str) -> Iterator[tuple[int, bytes]]:
    first = next(rows, None)
    if first is None:
        return
    found = list(first[1])
    fields = {"receipts": RECEIPT_COLUMNS + ITEM_COLUMNS, "profiles": PROFILE_KEYS,
              "communications": COMMUNICATION_COLUMNS}[kind]
    source = {name: columns.get(name, name) for name in fields if columns.get(name, name) in found}
    missing = [name for name in REQUIRED[kind] if name not in source]
    if missing:
        wanted = ", ".join(f"{m} (column {columns.get(m, m)!r})" for m in missing)
        raise InputError(f"{path}: missing required column(s) {wanted}; columns found: {', '.join(found)}. "
                         "Map them with --columns NAME=COLUMN")
    every = _chain(first, rows)
    if kind == "profiles":
        for n, row in every:
            yield n, orjson.dumps(_profile(row, source))
    elif kind == "communications":
        for n, row in every:
            yield n, orjson.dumps({name: row[col] for name, col in source.items() if row[col] is not None})
    else:
        yield from _receipts(every, source)


def _chain(first: tuple[int, Row], rest: Iterator[tuple[int, Row]]) -> Iterator[tuple[int, Row]]:
    yield first
    yield from rest


def _profile(row: Row, source: dict[str, str]) -> dict[str, Any]:
    """A profile row in the contract's shape: lists separated by ``;`` in a cell (tags,
    labels, children), ``true``/``false`` for legal_entity, a JSON object in a cell for
    attributes and consent; anything else is left for the validator to judge."""
    doc = {name: row[col] for name, col in source.items() if row[col] is not None}
    for key in ("tags", "labels", "children"):
        value = doc.get(key)
        if isinstance(value, str):
            doc[key] = [t.strip() for t in value.split(";") if t.strip()]
    entity = doc.get("legal_entity")
    if isinstance(entity, str) and entity.strip().lower() in ("true", "false"):
        doc["legal_entity"] = entity.strip().lower() == "true"
    for key in ("attributes", "consent"):
        value = doc.get(key)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            with contextlib.suppress(orjson.JSONDecodeError):  # else bad_type, the cell as it is
                doc[key] = orjson.loads(value)
    return doc


def _receipts(rows: Iterator[tuple[int, Row]], source: dict[str, str]) -> Iterator[tuple[int, bytes]]:
    head = {name: col for name, col in source.items() if name in RECEIPT_COLUMNS}
    item_cols = {name: col for name, col in source.items() if name in ITEM_COLUMNS}
    current: dict[str, Any] | None = None
    current_no = 0
    for n, row in rows:
        rid = row[source["receipt_id"]]
        if current is None or rid is None or rid != current.get("receipt_id"):
            if current is not None:
                yield current_no, orjson.dumps(current)
            current = {name: row[col] for name, col in head.items() if row[col] is not None}
            if "type" not in head:  # no such column: every row is a sale
                current["type"] = "sale"
            current_no = n
        item = _item(row, item_cols)
        if item is not None:
            current.setdefault("items", []).append(item)
    if current is not None:
        yield current_no, orjson.dumps(current)


def _item(row: Row, cols: dict[str, str]) -> dict[str, Any] | None:
    if "amount" not in cols or row[cols["amount"]] is None:
        return None
    item: dict[str, Any] = {name: row[col] for name, col in cols.items() if row[col] is not None}
    qty = item.get("qty")
    if isinstance(qty, str):
        item["qty"] = _number(qty)
    return item


def _number(text: str) -> Any:
    """A quantity as a JSON number when it is one; else the text (rejected as bad_value)."""
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return text
        return value if value == value and value not in (float("inf"), float("-inf")) else text
