"""``loyalty replay`` with rules that read the population: any order of the lines gives the
same outputs, the snapshot file has its documented keys, --jobs is refused."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.batch.simulate import SimConfig, generate
from app.cli.main import main

AS_OF = "2026-06-01T00:00:00+03:00"


def _doc(line: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("occurred_at"), str) else None


def _run(tmp: Path, name: str, lines: list[bytes], *extra: str) -> dict[str, bytes]:
    src = tmp / f"{name}.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out = {k: tmp / f"{name}.{k}" for k in ("changes", "segments", "summary", "population")}
    code = main(["replay", "--rules", "rfm_quantiles", "--rules", "abc", "--rules", "profsalon",
                 "--input", str(src), "--as-of", AS_OF, "--tz", "Europe/Moscow", "--quiet",
                 "--changes-out", str(out["changes"]), "--segments-out", str(out["segments"]),
                 "--summary-out", str(out["summary"]), "--population-out", str(out["population"]), *extra])
    assert code == 0
    return {k: p.read_bytes() for k, p in out.items()}


def test_population_replay_is_order_free_and_writes_the_snapshot(tmp_path: Path) -> None:
    lines = list(generate(SimConfig(clients=120, days=40, seed=9)))
    first = _run(tmp_path, "a", lines)
    shuffled = lines[:]
    random.Random(4).shuffle(shuffled)
    assert _run(tmp_path, "b", shuffled) == first
    summary = orjson.loads(first["summary"])
    # every Moscow midnight after the first purchase up to as-of (itself a midnight)
    first_sale = min(datetime.fromisoformat(d["occurred_at"]) for d in map(_doc, lines)
                     if d and d.get("type") == "sale" and d.get("client_id"))
    msk = timezone(timedelta(hours=3))
    days = (datetime.fromisoformat(AS_OF).date() - first_sale.astimezone(msk).date()).days
    assert summary["snapshots"] == days
    snap = orjson.loads(first["population"])
    assert set(snap) == {"instant", "version", "clients", "values", "statistics", "relative_accuracy"}
    assert snap["instant"] == "2026-05-31T21:00:00Z" and snap["clients"] == 120
    assert snap["statistics"]["salon_avg_check"] == {"kind": "ratio", "metric": "revenue_12m",
                                                     "per": "visits_12m", "at": None, "where": "has_purchase"}
    causes = {orjson.loads(e)["data"]["cause"] for e in first["changes"].splitlines()}
    assert {"receipt", "time", "population"} <= causes
    weekly = _run(tmp_path, "w", lines, "--population-cadence", "week")
    assert orjson.loads(weekly["summary"])["snapshots"] < 10
    assert orjson.loads(weekly["population"])["values"] == snap["values"]  # the same instant: as-of


def test_population_rules_refuse_several_processes(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_bytes(b"")
    with pytest.raises(SystemExit, match="run in one process"):
        main(["replay", "--rules", "abc", "--input", str(src), "--as-of", AS_OF, "--jobs", "2"])
