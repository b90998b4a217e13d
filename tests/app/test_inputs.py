"""Input files: JSON Lines, CSV and Parquet (PyArrow) into the contract's records, and
``loyalty replay`` independent of the order of the lines (any permutation, ``--jobs``,
an external sort that spills to disk)."""

from __future__ import annotations

import gzip
import random
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.batch.inputs import InputError, detect_format, parse_columns, records
from app.batch.simulate import SimConfig, generate, profiles
from app.cli.main import main as cli_main

END = datetime.fromisoformat("2026-06-10T00:00:00+00:00")
AS_OF = "2026-06-15T00:00:00Z"

CSV = """receipt_id,client_id,occurred_at,total,currency,sku,category,qty,amount,name
r1,c1,2026-03-01T10:00:00+03:00,150.50,RUB,s1,coffee,1,100.50,Ivan
r1,c1,2026-03-01T10:00:00+03:00,150.50,RUB,s2,bakery,2,50.00,Ivan
r2,c2,2026-03-02T11:00:00+03:00,99.99,RUB,,,,,
r3,c1,2026-03-03T12:00:00+03:00,10.00,RUB,s3,coffee,x,10.00,
"""


def _all(path: Path | str, kind: str = "receipts", fmt: str | None = None,
         columns: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    return [(n, orjson.loads(raw)) for n, raw in records(str(path), kind, fmt, columns)]


def test_format_from_the_extension_gz_looked_through() -> None:
    assert detect_format("a.csv.gz", None) == "csv"
    assert detect_format("a.PARQUET", None) == "parquet"
    assert detect_format("a.jsonl.gz", None) == "jsonl"
    assert detect_format("-", None) == "jsonl"
    assert detect_format("a.txt", "csv") == "csv"
    with pytest.raises(InputError, match="unknown format"):
        detect_format("a", "xml")


def test_columns_spec() -> None:
    assert parse_columns("client_id=CustomerID, occurred_at=Date") == {"client_id": "CustomerID",
                                                                       "occurred_at": "Date"}
    assert parse_columns(None) == {}
    for bad in ("client_id", "=x", "phone=Phone"):
        with pytest.raises(InputError):
            parse_columns(bad)


@pytest.mark.parametrize("gz", [False, True])
def test_csv_rows_of_one_receipt_become_its_items(tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("r.csv.gz" if gz else "r.csv")
    path.write_bytes(gzip.compress(CSV.encode()) if gz else CSV.encode())
    got = _all(path)
    assert [n for n, _ in got] == [2, 4, 5]  # the first row's line in the file
    assert got[0][1] == {"receipt_id": "r1", "client_id": "c1", "occurred_at": "2026-03-01T10:00:00+03:00",
                         "total": "150.50", "currency": "RUB", "type": "sale",
                         "items": [{"sku": "s1", "category": "coffee", "qty": 1, "amount": "100.50"},
                                   {"sku": "s2", "category": "bakery", "qty": 2, "amount": "50.00"}]}
    assert "items" not in got[1][1] and "name" not in got[0][1]
    assert got[2][1]["items"][0]["qty"] == "x"  # rejected downstream as bad_value, with its line


def test_csv_with_mapped_columns_and_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    path.write_text("Invoice;Customer;When;Sum;Kind\n7;c9;2026-01-01T00:00:00Z;5.00;return\n")
    with pytest.raises(InputError, match=r"missing required column\(s\) receipt_id"):
        _all(path, columns={"client_id": "Customer"})
    path.write_text("Invoice,Customer,When,Sum,Kind\n7,c9,2026-01-01T00:00:00Z,5.00,return\n")
    cols = parse_columns("receipt_id=Invoice,client_id=Customer,occurred_at=When,total=Sum,type=Kind")
    assert _all(path, columns=cols) == [(2, {"receipt_id": "7", "client_id": "c9", "type": "return",
                                             "occurred_at": "2026-01-01T00:00:00Z", "total": "5.00"})]


def test_csv_profiles_keep_only_the_fields_the_product_reads(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("client_id,name,phone,birth_date,tags\nc1,Tatyana,+79000000000,1990-01-12,vip; kids\n")
    assert _all(path, "profiles") == [(2, {"client_id": "c1", "birth_date": "1990-01-12", "tags": ["vip", "kids"]})]


def test_csv_profile_lists_booleans_and_objects_in_cells(tmp_path: Path) -> None:
    from rules import parse_profile

    path = tmp_path / "p.csv"
    path.write_text('client_id,first_name,labels,children,legal_entity,attributes,consent\n'
                    'c1,Tatyana,vip_list; red,2015-02-28;2019-11-02,TRUE,"{""pet"": ""dog""}","{""sms"": false}"\n')
    ((_, doc),) = _all(path, "profiles")
    assert doc == {"client_id": "c1", "first_name": "Tatyana", "labels": ["vip_list", "red"],
                   "children": ["2015-02-28", "2019-11-02"], "legal_entity": True,
                   "attributes": {"pet": "dog"}, "consent": {"sms": False}}
    assert parse_profile(doc, None).fields["labels"] == ["red", "vip_list"]


def test_parquet_values_become_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    when = pa.array([datetime.fromisoformat("2026-03-01T10:00:00+03:00")] * 2, pa.timestamp("s", tz="UTC"))
    table = pa.table({"receipt_id": ["r1", "r2"], "client_id": ["c1", "c1"], "occurred_at": when,
                      "total": pa.array([Decimal("150.50"), Decimal("0.10")], pa.decimal128(12, 2)),
                      "qty": [1, 2]})
    pq.write_table(table, path)
    got = _all(path)
    assert got[0] == (1, {"receipt_id": "r1", "client_id": "c1", "occurred_at": "2026-03-01T07:00:00+00:00",
                          "total": "150.50", "type": "sale"})
    assert got[1][1]["total"] == "0.10"


def test_unreadable_inputs_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        _all(tmp_path / "nope.jsonl")
    csv = tmp_path / "r.jsonl"
    csv.write_text(CSV)
    with pytest.raises(InputError, match="looks like CSV"):
        _all(csv)
    gz = tmp_path / "r.jsonl.gz"
    gz.write_bytes(gzip.compress(CSV.encode()))
    with pytest.raises(InputError, match=r"name it \.csv\.gz"):
        _all(gz)
    parquet = tmp_path / "p.data"
    pq.write_table(pa.table({"a": [1]}), parquet)
    with pytest.raises(InputError, match="Parquet"):
        _all(parquet)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"receipt_id": 1}\nnot json\n\n[1]\n')
    assert [n for n, _ in records(str(bad), "receipts")] == [1, 2, 4]  # rejected downstream, one by one


def test_replay_of_a_missing_file_or_a_csv_as_jsonl_exits_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path in (tmp_path / "missing.jsonl", tmp_path / "r.jsonl"):
        if path.name == "r.jsonl":
            path.write_text(CSV)
        assert cli_main(["replay", "--rules", "rfm", "--input", str(path), "--as-of", AS_OF, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err


# -- replay: order independence ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], Path]:
    d = tmp_path_factory.mktemp("order")
    cfg = SimConfig(clients=120, days=120, seed=5, end=END, malformed_rate=0.01)
    prof = d / "p.jsonl"
    prof.write_bytes(b"\n".join(profiles(cfg)) + b"\n")
    return list(generate(cfg)), prof


def _run(d: Path, lines: list[bytes], prof: Path, *extra: str) -> dict[str, bytes]:
    d.mkdir()
    (d / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    out = {k: d / f"{k}.jsonl" for k in ("segments", "changes", "summary")}
    assert cli_main(["replay", "--rules", "boostfeel", "--rules", "rfm", "--input", str(d / "in.jsonl"),
                     "--profiles", str(prof), "--as-of", AS_OF, "--tz", "Europe/Moscow", "--quiet",
                     "--segments-out", str(out["segments"]), "--changes-out", str(out["changes"]),
                     "--summary-out", str(out["summary"]), *extra]) == 0
    return {k: p.read_bytes() for k, p in out.items()}


def test_any_permutation_jobs_and_a_spilling_sort_give_byte_identical_outputs(
        sim: tuple[list[bytes], Path], tmp_path: Path) -> None:
    lines, prof = sim
    base = _run(tmp_path / "sorted", lines, prof)
    summary = orjson.loads(base["summary"])
    assert summary["order"] == "time" and summary["changes"] > 100
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    assert _run(tmp_path / "shuffled", shuffled, prof) == base
    assert _run(tmp_path / "reversed", lines[::-1], prof, "--jobs", "3") == base
    # 1 MiB of sort memory for ~1 MiB of lines: sorted runs spill to temporary files
    assert _run(tmp_path / "spilled", shuffled, prof, "--sort-memory", "1") == base


def test_input_order_is_what_a_stream_sees(sim: tuple[list[bytes], Path], tmp_path: Path) -> None:
    lines, prof = sim
    base = _run(tmp_path / "time", lines, prof)
    arrival = _run(tmp_path / "input", lines, prof, "--order", "input")
    assert orjson.loads(arrival["summary"])["order"] == "input"
    assert arrival["segments"] == base["segments"]  # sorted input: the same results
    shuffled = lines[:]
    random.Random(2).shuffle(shuffled)
    late = _run(tmp_path / "late", shuffled, prof, "--order", "input")
    assert late["changes"] != base["changes"]  # evaluated at each client's clock as they came


def test_csv_and_jsonl_of_the_same_receipts_give_the_same_outputs(tmp_path: Path) -> None:
    cfg = SimConfig(clients=60, days=60, seed=8, end=END, malformed_rate=0.0)
    # a CSV row repeating the previous row's receipt_id is one more item of that receipt, so
    # the simulator's POS retries (the same receipt twice in a row) are left out here
    docs = list({d["receipt_id"]: d for d in map(orjson.loads, generate(cfg))}.values())
    header = "receipt_id,client_id,store_id,type,total,currency,occurred_at,original_receipt_id,category,amount"
    rows = [header]
    for doc in docs:
        head = [str(doc.get(k) or "") for k in header.split(",")[:8]]
        for item in doc.get("items") or [{}]:
            rows.append(",".join([*head, item.get("category", ""), str(item.get("amount", ""))]))
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    jsonl = [orjson.dumps({k: v for k, v in d.items() if k != "items" or v} | (
        {"items": [{"category": i["category"], "amount": i["amount"]} for i in d["items"]]}
        if d.get("items") else {})) for d in docs]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(jsonl) + b"\n")
    outs = []
    for name in ("in.csv", "in.jsonl"):
        seg = tmp_path / f"{name}.segments"
        assert cli_main(["replay", "--rules", "boostfeel", "--rules", "basket", "--input", str(tmp_path / name),
                         "--as-of", AS_OF, "--quiet", "--segments-out", str(seg)]) == 0
        outs.append(seg.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") > 50
