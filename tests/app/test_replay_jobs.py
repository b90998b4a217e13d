"""``loyalty replay --jobs N``: clients split over N processes, outputs identical to one."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from app.batch.jobs import Job, WorkerFailed, run, shard_of
from app.batch.simulate import SimConfig, generate, profiles
from app.cli.main import main as cli_main

END = datetime.fromisoformat("2026-06-10T00:00:00+00:00")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("jobs")
    cfg = SimConfig(clients=300, days=120, seed=11, end=END, malformed_rate=0.01)
    receipts, prof = d / "r.jsonl", d / "p.jsonl"
    lines = list(generate(cfg))
    lines += [b'{"receipt_id": "x", "client_id": 42}', b"[1, 2]", b"\xff not json"]  # routed to worker 0
    receipts.write_bytes(b"\n".join(lines) + b"\n")
    prof.write_bytes(b"\n".join([*profiles(cfg), b'{"client_id": "c-0000001", "gender": "q"}']) + b"\n")
    return receipts, prof


def _replay(out: Path, receipts: Path, prof: Path, jobs: int, capsys: pytest.CaptureFixture[str]) -> dict:
    out.mkdir()
    code = cli_main(["replay", "--rules", "boostfeel", "--rules", "rfm", "--rules", "basket",
                     "--input", str(receipts), "--profiles", str(prof), "--as-of", "2026-06-15T00:00:00Z",
                     "--tz", "Europe/Moscow", "--jobs", str(jobs), "--quiet",
                     "--segments-out", str(out / "segments.jsonl"), "--changes-out", str(out / "changes.jsonl"),
                     "--rejects-out", str(out / "rejects.jsonl")])
    assert code == 0
    summary: dict = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    del summary["seconds"], summary["receipts_per_second"]
    return summary


def test_jobs_give_byte_identical_outputs(inputs: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    receipts, prof = inputs
    one = _replay(tmp_path / "one", receipts, prof, 1, capsys)
    three = _replay(tmp_path / "three", receipts, prof, 3, capsys)
    assert one == three
    assert one["changes"] > 1000 and one["rejected"] and one["profiles"] and one["anonymous"]
    for name in ("segments.jsonl", "changes.jsonl", "rejects.jsonl"):
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "three" / name).read_bytes()
        assert a == b and a, name
    events = [orjson.loads(x) for x in (tmp_path / "three" / "changes.jsonl").read_bytes().splitlines()]
    assert {e["data"]["cause"] for e in events} == {"receipt", "time"}  # profiles come first


def test_a_client_always_goes_to_the_same_worker() -> None:
    line = b'{"receipt_id": "r-1", "client_id": "c-7", "total": "1.00"}'
    other = b'{"client_id": "c-7", "receipt_id": "r-2"}'
    assert shard_of(line, 4) == shard_of(other, 4)
    assert {shard_of(b'{"client_id": "c-%d"}' % i, 4) for i in range(50)} == {0, 1, 2, 3}
    for no_client in (b"not json", b"[]", b'{"client_id": null}', b'{"client_id": 7}', b"{}"):
        assert shard_of(no_client, 4) == 0


def test_a_failing_worker_stops_the_run(tmp_path: Path) -> None:
    job = Job(rules=[str(tmp_path / "missing.yaml")], params=[], tz="UTC",
              as_of=datetime.fromisoformat("2026-06-15T00:00:00+00:00"))
    lines = [(n, b'{"client_id": "c-%d"}' % n) for n in range(1, 100)]
    with pytest.raises(WorkerFailed, match="worker 0"):
        run(job, 2, [("receipts", iter(lines))], {})


def test_flips_per_client_month_count_changes_from_a_segment(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two clients, one receipt each: "other" (their first segment, no flip), then
    potentially loyal after 7 days and at risk after 20 (two flips each). Segmented 35 and
    20 days up to --as-of: 4 flips / 55 days = 2.2136 flips per client per month."""
    src = tmp_path / "r.jsonl"
    src.write_bytes(b"".join(orjson.dumps(
        {"receipt_id": f"r-{cid}", "client_id": cid, "occurred_at": at, "type": "sale",
         "total": "300.00", "currency": "RUB"}) + b"\n"
        for cid, at in (("a", "2026-03-01T10:00:00Z"), ("b", "2026-03-16T10:00:00Z"))))
    changes = tmp_path / "changes.jsonl"
    assert cli_main(["replay", "--rules", "boostfeel", "--input", str(src), "--quiet",
                     "--as-of", "2026-04-05T10:00:00Z", "--changes-out", str(changes)]) == 0
    summary = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    events = sorted(map(orjson.loads, changes.read_bytes().splitlines()), key=lambda e: (e["subject"], e["time"]))
    tos = [(e["data"]["from"], e["data"]["to"]) for e in events]
    assert tos == [(None, "other"), ("other", "potentially_loyal"), ("potentially_loyal", "at_risk")] * 2
    assert summary["flips"] == {"boostfeel": 4}
    assert summary["flips_per_client_month"] == {"boostfeel": 2.2136}


def test_flips_summed_over_jobs_match_the_change_events(inputs: tuple[Path, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    receipts, prof = inputs
    summary = _replay(tmp_path / "three", receipts, prof, 3, capsys)
    events = [orjson.loads(x) for x in (tmp_path / "three" / "changes.jsonl").read_bytes().splitlines()]
    flips = Counter(e["data"]["dimension"] for e in events if e["data"]["from"] is not None)
    as_of = datetime.fromisoformat("2026-06-15T00:00:00+00:00").timestamp()
    held: Counter[str] = Counter()
    for e in events:
        if e["data"]["from"] is None:
            held[e["data"]["dimension"]] += int(as_of - datetime.fromisoformat(e["time"]).timestamp())
    assert summary["flips"] == dict(sorted(flips.items())) and set(flips) == {"boostfeel", "rfm", "rfm_score", "basket"}
    assert summary["flips_per_client_month"] == {d: round(flips[d] * 2_629_746 / s, 4) for d, s in sorted(held.items())}
