"""Property tests of ``loyalty replay``'s order independence on generated histories (the
simulator's returns, POS retries, late receipts and malformed lines, plus profiles):

* order ``time``: any permutation of the lines gives byte-identical changes, segments,
  rejects and summary;
* order ``input`` (what a stream sees) on any permutation ends with the sorted run's
  metrics for every client (segments: see the note in the test).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.batch.replay import Replay, time_order
from app.batch.simulate import SimConfig, generate, profiles
from rules import Engine, load_ruleset

END = datetime.fromisoformat("2026-06-10T00:00:00+00:00")
AS_OF = datetime.fromisoformat("2026-06-15T00:00:00+00:00")
CFG = SimConfig(clients=25, days=90, seed=31, end=END, malformed_rate=0.02)
RECEIPTS = list(generate(CFG))
PROFILES = list(profiles(CFG))
ENGINE = Engine([load_ruleset(r) for r in ("boostfeel", "rfm", "basket")], tz="Europe/Moscow")


def _run(receipts: list[bytes], prof: list[bytes], order: str) -> dict[str, Any]:
    changes: list[bytes] = []
    rejects: list[Any] = []
    rp = Replay(ENGINE, AS_OF, lambda e: changes.append(orjson.dumps(e)),
                lambda r: rejects.append((r["reason"], r["raw"])))
    inputs = [("profiles", list(enumerate(prof, 1))), ("receipts", list(enumerate(receipts, 1)))]
    if order == "time":
        time_order(rp, inputs, 1 << 16)  # 64 KiB: the sort spills runs to disk
    else:
        for source, lines in inputs:
            for n, line in lines:
                rp.line(line, n, source)
    rows = rp.finish()
    return {"changes": changes, "segments": [orjson.dumps(r) for r in rows],
            "rejects": sorted(rejects), "stats": rp.stats, "metrics": {r["client_id"]: r["metrics"] for r in rows}}


SORTED = _run(RECEIPTS, PROFILES, "time")


def test_the_history_has_what_the_properties_are_about() -> None:
    stats = SORTED["stats"]
    assert stats.duplicates > 0 and stats.rejected_total > 0 and stats.profiles > 0
    assert any(b'"return"' in line for line in RECEIPTS)
    assert len(SORTED["changes"]) > 300


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(RECEIPTS), st.permutations(PROFILES))
def test_any_permutation_gives_byte_identical_outputs(receipts: list[bytes], prof: list[bytes]) -> None:
    got = _run(receipts, prof, "time")
    assert got["changes"] == SORTED["changes"]
    for a, b in zip(got["segments"], SORTED["segments"], strict=True):
        sa, sb = orjson.loads(a)["segments"], orjson.loads(b)["segments"]
        assert sa == sb, (orjson.loads(a)["client_id"], sa, sb)
    assert got["rejects"] == SORTED["rejects"]
    assert got["stats"] == SORTED["stats"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(RECEIPTS))
def test_input_order_on_any_permutation_ends_with_the_sorted_metrics(receipts: list[bytes]) -> None:
    got = _run(receipts, PROFILES, "input")
    assert got["metrics"] == SORTED["metrics"]
    # Segments are not asserted: one permutation hypothesis found (of ~100 tried) ended with
    # another segment for one client although every metric was equal (known limits: change
    # events and hysteresis depend on the arrival order).
