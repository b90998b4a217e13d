"""``loyalty replay`` on real purchase data that nobody here wrote: CDNOW, the CD retailer's
transaction log of 1997-1998 used by the BG/NBD paper (Fader, Hardie & Lee 2005), shipped
by the ``lifetimes`` package (a test-only dependency; its data file is read without
importing the package). 69,659 purchases of 23,570 customers.

Three orders of the same receipts (the file's, by customer; shuffled; customer
descending) must give zero rejects and byte-identical outputs, and the lifetime metrics
of every customer must equal an exact computation written here independently, in plain
Python over the raw file (never with the code under test).
"""

from __future__ import annotations

import importlib.util
import random
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from app.cli.main import main

AS_OF = "1998-07-01T12:00:00Z"  # 08:00 in New York: business day 1998-07-01
AS_OF_DAY = date(1998, 7, 1)


def _cdnow() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (the CDNOW data set) is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def _rows() -> list[tuple[str, str, str, str]]:
    """(row number, customer id, YYYYMMDD, dollars) of every purchase, as in the file."""
    out = []
    for n, line in enumerate(_cdnow().read_text().splitlines()[1:], 1):
        customer, day, _cds, dollars = line.split()
        out.append((str(n), customer, day, dollars))
    return out


def _receipt(row: tuple[str, str, str, str]) -> bytes:
    n, customer, day, dollars = row
    return orjson.dumps({"receipt_id": f"cdnow-{n}", "client_id": customer, "type": "sale",
                         "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z",
                         "total": dollars, "currency": "USD"})


def _replay(tmp: Path, name: str, lines: list[bytes], *extra: str) -> dict[str, bytes]:
    src = tmp / f"{name}.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = {k: tmp / f"{name}.{k}" for k in ("segments", "changes", "summary", "rejects")}
    code = main(["replay", "--rules", "rfm", "--rules", "boostfeel", "--input", str(src),
                 "--as-of", AS_OF, "--tz", "America/New_York", "--quiet",
                 "--segments-out", str(out["segments"]), "--changes-out", str(out["changes"]),
                 "--summary-out", str(out["summary"]), "--rejects-out", str(out["rejects"]), *extra])
    assert code == 0
    return {k: p.read_bytes() for k, p in out.items()}


def _exact(rows: list[tuple[str, str, str, str]]) -> dict[str, dict[str, object]]:
    """Lifetime visits, value (exact decimal) and days since the last purchase per customer."""
    visits: dict[str, int] = defaultdict(int)
    value: dict[str, Decimal] = defaultdict(Decimal)
    last: dict[str, date] = {}
    for _, customer, day, dollars in rows:
        visits[customer] += 1
        value[customer] += Decimal(dollars)
        d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        last[customer] = max(last.get(customer, d), d)
    return {c: {"lifetime_visits": visits[c], "lifetime_value": f"{value[c]:.2f}",
                "days_since_last_purchase": (AS_OF_DAY - last[c]).days} for c in visits}


def test_cdnow_in_three_orders_gives_identical_outputs_and_exact_metrics(tmp_path: Path) -> None:
    rows = _rows()
    assert len(rows) == 69_659 and min(r[2] for r in rows) == "19970101"
    by_customer = [_receipt(r) for r in rows]  # the file's order
    shuffled = by_customer[:]
    random.Random(17).shuffle(shuffled)
    descending = [_receipt(r) for r in sorted(rows, key=lambda r: (r[1], int(r[0])), reverse=True)]

    first = _replay(tmp_path, "file", by_customer)
    summary = orjson.loads(first["summary"])
    assert summary["lines"] == summary["applied"] == 69_659
    assert summary["rejected"] == {} and first["rejects"] == b""
    assert summary["clients"] == 23_570
    for name, lines in (("shuffled", shuffled), ("descending", descending)):
        assert _replay(tmp_path, name, lines) == first, name

    exact = _exact(rows)
    segments = [orjson.loads(line) for line in first["segments"].splitlines()]
    assert len(segments) == len(exact) == 23_570
    for row in segments:
        want = exact[row["client_id"]]
        got = {k: row["metrics"][k] for k in want}
        assert got == want, row["client_id"]


def test_cdnow_as_a_stream_sees_it_ends_with_the_sorted_metrics(tmp_path: Path) -> None:
    """``--order input`` (what a stream that receives the lines shuffled computes): other
    change events, the same final metrics for every customer."""
    rows = _rows()
    lines = [_receipt(r) for r in rows]
    random.Random(3).shuffle(lines)
    ordered = _replay(tmp_path, "time", lines)
    arrival = _replay(tmp_path, "input", lines, "--order", "input")
    metrics = [{"client_id": r["client_id"], "metrics": r["metrics"]}
               for r in map(orjson.loads, ordered["segments"].splitlines())]
    assert metrics == [{"client_id": r["client_id"], "metrics": r["metrics"]}
                       for r in map(orjson.loads, arrival["segments"].splitlines())]
    assert orjson.loads(arrival["summary"])["rejected"] == {}
