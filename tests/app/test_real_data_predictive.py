"""The BG/NBD paper's table reproduced through ``loyalty replay``, end to end: the CDNOW
cohort of Fader, Hardie & Lee (2005), 2,357 customers who first bought in the first quarter
of 1997 (``CDNOW_sample.txt``, shipped by the ``lifetimes`` package, a test-only dependency;
the file is read here without importing the package), calibrated on the 39 weeks ending
1997-09-30. The snapshot that ``--population-out`` writes must hold r = 0.243,
alpha = 4.414 per week (30.9 per day), a = 0.793 and b = 2.426 within 1%.

Per-client p_alive in the replay's change events must equal the closed form for the fitted
parameters and each client's (x, t_x, T), computed here from the raw file."""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from datetime import date
from pathlib import Path

import orjson
import pytest

from app.cli.main import main

PAPER = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426}
END = date(1997, 9, 30)


def _sample() -> Path:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lifetimes (the CDNOW data set) is not installed: pip install -e '.[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_sample.txt"


def _calibration() -> list[tuple[str, date, str]]:
    """(customer, day, dollars) of every purchase up to 1997-09-30."""
    out = []
    for line in _sample().read_text().splitlines():
        customer, _sample_id, day, _cds, dollars = line.split()
        d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        if d <= END:
            out.append((customer, d, dollars))
    return out


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], list]:
    tmp = tmp_path_factory.mktemp("cdnow-predictive")
    rows = _calibration()
    src = tmp / "cal.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps({
        "receipt_id": f"s-{n}", "client_id": c, "type": "sale", "occurred_at": f"{d.isoformat()}T12:00:00Z",
        "total": dollars, "currency": "USD"}) for n, (c, d, dollars) in enumerate(rows)) + b"\n")
    pop_path, segments = tmp / "population.json", tmp / "segments.jsonl"
    code = main(["replay", "--rules", "churn_risk", "--input", str(src), "--as-of", "1997-09-30T23:59:59Z",
                 "--tz", "UTC", "--quiet", "--population-cadence", "month",
                 "--population-out", str(pop_path), "--segments-out", str(segments)])
    assert code == 0
    return (orjson.loads(pop_path.read_bytes()), [orjson.loads(x) for x in segments.read_bytes().splitlines()],
            rows)


def test_the_papers_parameters(replayed: tuple[dict, list[dict], list]) -> None:
    snapshot, _, _ = replayed
    assert snapshot["clients"] == 2357
    fitted = snapshot["models"]["bgnbd"]
    assert fitted["time_unit"] == "day"
    for name, value in PAPER.items():
        assert fitted[name] == pytest.approx(value, rel=0.01), (name, fitted[name])
    assert snapshot["models"]["mbgnbd"] is not None and snapshot["models"]["gamma_gamma"] is not None


def test_p_alive_of_every_client_is_the_closed_form(replayed: tuple[dict, list[dict], list]) -> None:
    snapshot, segments, rows = replayed
    used = snapshot["models"]["used"]
    m = snapshot["models"][used]
    days: dict[str, set[date]] = defaultdict(set)
    for c, d, _ in rows:
        days[c].add(d)
    assert len(segments) == len(days) == 2357
    for row in segments:
        c = row["client_id"]
        first, last = min(days[c]), max(days[c])
        x, t_x, big_t = len(days[c]) - 1, (last - first).days, (END - first).days
        ratio = ((m["alpha"] + big_t) / (m["alpha"] + t_x)) ** (m["r"] + x)
        if used == "bgnbd":
            p = 1.0 if x == 0 else 1 / (1 + m["a"] / (m["b"] + x - 1) * ratio)
        else:
            p = 1 / (1 + m["a"] / (m["b"] + x) * ratio)
        assert row["metrics"]["p_alive"] == pytest.approx(p, rel=1e-9), c
        band = "low" if p >= 0.67 else "medium" if p >= 0.34 else "high"
        assert row["segments"]["churn_risk"] == band, c
