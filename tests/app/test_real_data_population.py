"""Population-relative segments on real data: CDNOW (23,570 customers of a US CD retailer,
dollars; see test_real_data.py). ``loyalty replay`` with ``rfm_quantiles`` and ``abc``
against an exact computation of the definitions written here in plain Python over the raw
file (nearest-rank quintiles, cumulative revenue shares), never with the code under test."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson

from app.cli.main import main
from tests.app.test_real_data import AS_OF, AS_OF_DAY, _receipt, _rows


def _nearest_rank(values: list[int], p: int) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def _exact() -> dict[str, tuple[int, int, int]]:
    """(R days since the last purchase, F visits, M cents over the current and 11 previous
    calendar months) per customer at AS_OF (New York business days: purchases at 08:00)."""
    last: dict[str, date] = {}
    visits: dict[str, int] = defaultdict(int)
    cents: dict[str, int] = defaultdict(int)
    first_month = (AS_OF_DAY.year * 12 + AS_OF_DAY.month - 1) - 11
    for _, customer, day, dollars in _rows():
        d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        last[customer] = max(last.get(customer, d), d)
        if d.year * 12 + d.month - 1 >= first_month:
            visits[customer] += 1
            cents[customer] += int(Decimal(dollars) * 100)
    return {c: ((AS_OF_DAY - last[c]).days, visits[c], cents[c]) for c in last}


def test_cdnow_quintile_rfm_and_abc_equal_an_exact_computation(tmp_path: Path, capsys: object) -> None:
    src = tmp_path / "cdnow.jsonl"
    src.write_bytes(b"\n".join(_receipt(r) for r in _rows()) + b"\n")
    seg_path, pop_path = tmp_path / "segments.jsonl", tmp_path / "population.json"
    code = main(["replay", "--rules", "rfm_quantiles", "--rules", "abc", "--input", str(src),
                 "--as-of", AS_OF, "--tz", "America/New_York", "--quiet", "--population-cadence", "month",
                 "--segments-out", str(seg_path), "--population-out", str(pop_path)])
    assert code == 0
    got = {r["client_id"]: r["segments"] for r in map(orjson.loads, seg_path.read_bytes().splitlines())}
    exact = _exact()
    assert len(got) == len(exact) == 23_570
    scored = [c for c, (_, f, _) in exact.items() if f >= 1]
    cuts = [[_nearest_rank([exact[c][i] for c in scored], p) for p in (20, 40, 60, 80)] for i in range(3)]
    population = orjson.loads(pop_path.read_bytes())
    assert population["instant"] == "1998-07-01T12:00:00Z" and population["clients"] == 23_570
    values = population["values"]
    assert [values[f"r{p}"] for p in (20, 40, 60, 80)] == cuts[0]
    assert [values[f"f{p}"] for p in (20, 40, 60, 80)] == cuts[1]
    agree = Counter()
    for c, (r, f, m) in exact.items():
        seg = got[c]
        if f < 1:
            want = "000"
        else:
            want = "".join(str(1 + n) for n in (sum(x > r for x in cuts[0]), sum(x < f for x in cuts[1]),
                                                 sum(x < m for x in cuts[2])))
        score = seg["rfm_quantiles_score"]
        agree["r"] += score[0] == want[0]
        agree["f"] += score[1] == want[1]
        agree["m"] += score[2] == want[2]
    positive = sorted((m for _, _, m in exact.values() if m > 0), reverse=True)
    total = sum(positive)

    def share_cut(share: int) -> int:  # the smallest value whose clients above hold < share% of the total
        above, running, cut = 0, 0, positive[0]
        for i, v in enumerate(positive):
            if i and positive[i - 1] != v:
                above = running  # the revenue of every client with more
            if above * 100 >= share * total:
                break
            cut = v
            running += v
        return cut

    a_cut, b_cut = share_cut(80), share_cut(95)
    for c, (_, _, m) in exact.items():
        want = "none" if m <= 0 else "a" if m >= a_cut else "b" if m >= b_cut else "c"
        agree["abc"] += got[c]["abc"] == want
    n = len(exact)
    assert agree["r"] == agree["f"] == n  # integer metrics: exact
    assert agree["m"] >= 0.97 * n and agree["abc"] >= 0.97 * n
    scores = Counter(seg["rfm_quantiles_score"] for seg in got.values())
    classes = Counter(seg["abc"] for seg in got.values())
    print(f"\nCDNOW at {AS_OF}: R/F/M/ABC agreement {agree['r']}/{agree['f']}/{agree['m']}/{agree['abc']} of {n}; "
          f"cuts exact R {cuts[0]} F {cuts[1]} M {cuts[2]} (cents) vs sketch M "
          f"{[values[f'm{p}'] for p in (20, 40, 60, 80)]}; ABC exact cuts {a_cut}/{b_cut} cents vs "
          f"{values['a_min']}/{values['b_min']}; classes {dict(sorted(classes.items()))}; "
          f"scores {dict(scores.most_common())}")
