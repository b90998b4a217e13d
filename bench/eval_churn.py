"""Holdout evaluation of the predictive churn metrics against the rule presets, on real data.

CDNOW (the CD retailer's log used by the BG/NBD paper, shipped by the test-only ``lifetimes``
package as ``CDNOW_master.txt``; read directly, the package is not imported): 69,659
purchases of 23,570 customers who all first bought in the first quarter of 1997.

1. **Calibration.** Every purchase up to 1997-12-31 becomes a receipt at 12:00Z of its day;
   ``loyalty replay`` (``app.cli.main.main``, in this process) runs them into a temporary
   directory with ``--tz UTC --as-of 1998-01-01T00:00:00Z --population-cadence month`` and
   the presets ``churn_risk``, ``netix``, ``rfm`` and ``rfm_quantiles``: the fitted models
   (``--population-out``) and each client's segments and metrics (``--segments-out``).
2. **Holdout.** 1998-01-01 .. 1998-06-30 (181 days), from the raw file in plain Python.
   *Bought again*: at least one purchase in the holdout; *churned*: none.
3. **Scores.** AUC for "bought again" (rank-sum / Mann-Whitney with ties given their average
   rank, written here; 0.5 = chance) of the product's ``expected_purchases_90d`` and
   ``p_alive``, of the closed forms of both purchase models (BG/NBD and MBG/NBD, from the
   snapshot's parameters and each client's ``(x, t_x, T)`` recomputed from the raw file:
   ``x`` distinct purchase days after the first, ``t_x`` days first to last, ``T`` days from
   the first to the business day of ``--as-of``), of the segments as ordinal scores
   (:data:`ORDINALS`), of ``rfm_score`` read as the number R*100 + F*10 + M, and of
   ``-days_since_last_purchase``.
4. **Flags.** Precision, recall, F1 and share flagged, for "churned", of ``churn_risk``
   high (and high + medium), ``netix`` lost + losing, ``rfm`` lost (and lost + hibernating +
   about_to_sleep), ``rfm_quantiles`` likewise, P(alive) < 0.5 under each model; the same
   split into one-time buyers (x = 0 in the calibration) and repeaters, where the two
   models differ; and a sweep of the P(alive) cutoff (0.3, 0.34, 0.5, 0.67 and the cutoff
   of the best F1) for both models, next to the best cutoff of plain recency
   (``days_since_last_purchase >= d``) as a one-number baseline. Also the balanced accuracy
   (mean of the recall of churned and of bought again) and "everyone" as a row: with a
   churn rate near 77%, flagging everyone already has F1 0.87, so F1 alone favours
   flagging nearly everyone.
5. **Equal share.** For each rule flag, the precision of the product's scores
   (``expected_purchases_90d``, ``p_alive``) and of recency when they flag the same number
   of customers (the lowest scores): a comparison free of the choice of a threshold.

Prints markdown tables and the wall time of the replay and of the evaluation; ``--json-out``
writes every number. ``--workdir DIR`` keeps the replay's outputs and ``--reuse`` evaluates
an earlier replay in DIR again without replaying (the replay is most of the run time).

Note on time: ``days_since_last_purchase`` counts whole 24-hour periods since the purchase
instant, the model inputs count business days. With receipts at 12:00Z and ``--as-of``
00:00Z, a customer whose last purchase was on 1997-01-01 has days_since 364 and T 365:
``netix`` lost (>= 365 days) is then empty. ``--as-of 1998-01-01T12:00:00Z`` aligns both.

Usage:
    python bench/eval_churn.py [--json-out eval.json] [--workdir DIR [--reuse]] [--cdnow PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.cli.main import main as loyalty
from rules.predict.bgnbd import PurchaseModel, expected_purchases, p_alive

CALIBRATION_END = date(1997, 12, 31)
HOLDOUT = (date(1998, 1, 1), date(1998, 6, 30))
AS_OF = "1998-01-01T00:00:00Z"
RULES = ("churn_risk", "netix", "rfm", "rfm_quantiles")
CUTOFFS = (0.3, 0.34, 0.5, 0.67)

#: segments as ordinal scores for AUC, best (most likely to buy again) first
ORDINALS: dict[str, tuple[str, ...]] = {
    "churn_risk": ("low", "medium", "high"),
    "netix": ("ok", "losing", "lost"),
    "rfm": ("champions", "loyal", "potential_loyalist", "new", "promising", "need_attention",
            "cannot_lose", "at_risk", "about_to_sleep", "hibernating", "lost"),
    "rfm_quantiles": ("champions", "loyal", "potential_loyalist", "new", "promising", "need_attention",
                      "cannot_lose", "at_risk", "about_to_sleep", "hibernating", "lost", "inactive"),
}
SLEEPING = ("lost", "hibernating", "about_to_sleep")


# --- data -------------------------------------------------------------------------------

def cdnow_path(given: str | None) -> Path:
    """``--cdnow`` or the copy shipped inside the installed ``lifetimes`` package."""
    if given:
        return Path(given)
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("CDNOW_master.txt not found: pip install -e '.[dev]' (lifetimes) or pass --cdnow PATH")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "CDNOW_master.txt"


def read_cdnow(path: Path) -> list[tuple[int, str, date, str]]:
    """(row number, customer, day, dollars) of every purchase, in the file's order."""
    out = []
    for n, line in enumerate(path.read_text().splitlines()[1:], 1):
        customer, day, _cds, dollars = line.split()
        out.append((n, customer, date(int(day[:4]), int(day[4:6]), int(day[6:])), dollars))
    return out


def receipts(rows: Sequence[tuple[int, str, date, str]]) -> bytes:
    """The calibration purchases as receipts (JSON Lines), at 12:00Z of their day."""
    return b"".join(orjson.dumps({
        "receipt_id": f"cdnow-{n}", "client_id": c, "type": "sale", "occurred_at": f"{d.isoformat()}T12:00:00Z",
        "total": dollars, "currency": "USD"}) + b"\n" for n, c, d, dollars in rows if d <= CALIBRATION_END)


@dataclass
class Truth:
    """Per customer (sorted ids): calibration inputs and the holdout outcome."""

    ids: list[str]
    x: np.ndarray  # repeat purchase days in the calibration
    t_x: np.ndarray
    big_t: np.ndarray
    churned: np.ndarray  # bool: no purchase in the holdout


def truth(rows: Sequence[tuple[int, str, date, str]], day: date) -> Truth:
    """Model inputs at business day ``day`` and the holdout outcome, from the raw rows."""
    cal: dict[str, set[date]] = defaultdict(set)
    bought: set[str] = set()
    for _, c, d, _ in rows:
        if d <= CALIBRATION_END:
            cal[c].add(d)
        elif HOLDOUT[0] <= d <= HOLDOUT[1]:
            bought.add(c)
    ids = sorted(cal)
    x = np.array([len(cal[c]) - 1 for c in ids])
    t_x = np.array([(max(cal[c]) - min(cal[c])).days for c in ids])
    big_t = np.array([(day - min(cal[c])).days for c in ids])
    return Truth(ids, x, t_x, big_t, np.array([c not in bought for c in ids]))


# --- the replay -------------------------------------------------------------------------

def replay(work: Path, rows: Sequence[tuple[int, str, date, str]], as_of: str, cadence: str) -> float:
    """Calibration receipts through ``loyalty replay`` into ``work``; its wall time."""
    src = work / "calibration.jsonl"
    src.write_bytes(receipts(rows))
    args = ["replay", "--input", str(src), "--as-of", as_of, "--tz", "UTC", "--quiet",
            "--population-cadence", cadence, "--population-out", str(work / "population.json"),
            "--segments-out", str(work / "segments.jsonl"), "--summary-out", str(work / "summary.json")]
    for r in RULES:
        args += ["--rules", r]
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = loyalty(args)
    seconds = time.perf_counter() - started
    if code != 0:
        sys.stderr.write(err.getvalue())
        raise SystemExit(f"loyalty replay exited with {code}")
    return seconds


# --- measures ---------------------------------------------------------------------------

def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative), ties counted 1/2: the
    rank-sum (Mann-Whitney U) formula with tied scores given their average rank."""
    score = np.asarray(score, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each distinct value's last member
    average = ends - (counts - 1) / 2.0
    ranks = average[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def flag_stats(flag: np.ndarray, churned: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and share flagged of ``flag`` as a prediction of ``churned``."""
    flag = np.asarray(flag, dtype=bool)
    tp = int((flag & churned).sum())
    flagged, actual = int(flag.sum()), int(churned.sum())
    precision = tp / flagged if flagged else math.nan
    recall = tp / actual if actual else math.nan
    f1 = 2 * tp / (flagged + actual) if flagged + actual else math.nan
    stayed = len(flag) - actual
    specificity = (stayed - (flagged - tp)) / stayed if stayed else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "share": flagged / len(flag),
            "balanced_accuracy": (recall + specificity) / 2, "flagged": flagged, "tp": tp, "n": len(flag),
            "churned": actual}


def lowest_share(score: np.ndarray, churned: np.ndarray, k: int) -> float:
    """Precision of flagging the ``k`` lowest scores; a tie across the boundary shares its
    churned pro rata (the expectation under a random order of the tied)."""
    if k <= 0:
        return math.nan
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    pos = np.bincount(inverse, weights=churned.astype(float), minlength=len(counts))
    ends = np.cumsum(counts)
    j = int(np.searchsorted(ends, k))  # the group holding the k-th lowest
    if j >= len(counts):
        return float(pos.sum()) / len(score)
    before = int(ends[j] - counts[j])
    return float(pos[:j].sum() + pos[j] * (k - before) / counts[j]) / k


def best_below(values: np.ndarray, churned: np.ndarray) -> tuple[float, dict[str, float]]:
    """The cutoff c of the best F1 for the flag ``values < c`` (c among the distinct values
    and +inf), with its stats; ties of F1 go to the smaller cutoff."""
    uniq, inverse = np.unique(values, return_inverse=True)
    pos = np.bincount(inverse, weights=churned.astype(float), minlength=len(uniq))
    cnt = np.bincount(inverse, minlength=len(uniq)).astype(float)
    # flag values < uniq[k]: the first k distinct values; k = len(uniq): everything (c = inf)
    tp = np.concatenate(([0.0], np.cumsum(pos)))
    flagged = np.concatenate(([0.0], np.cumsum(cnt)))
    f1 = 2 * tp / (flagged + churned.sum())
    k = int(np.argmax(f1))
    cut = float(uniq[k]) if k < len(uniq) else math.inf
    return cut, flag_stats(values < cut, churned)


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _sci(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2e}"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --- the evaluation ---------------------------------------------------------------------

def evaluate(work: Path, t: Truth) -> tuple[dict[str, Any], list[str]]:
    """Every number (JSON-ready) and the markdown sections."""
    population = orjson.loads((work / "population.json").read_bytes())
    fitted = population.get("models") or population["values"]["predictive"]
    by_id = {r["client_id"]: r for r in map(orjson.loads, (work / "segments.jsonl").read_bytes().splitlines())}
    missing = [c for c in t.ids if c not in by_id]
    if missing or len(by_id) != len(t.ids):
        raise SystemExit(f"segments-out has {len(by_id)} clients, the file {len(t.ids)} ({len(missing)} missing)")
    segs = [by_id[c]["segments"] for c in t.ids]
    mets = [by_id[c]["metrics"] for c in t.ids]
    churned, bought = t.churned, ~t.churned
    n = len(t.ids)

    models = {v: PurchaseModel(v, float(fitted[v]["r"]), float(fitted[v]["alpha"]), float(fitted[v]["a"]),
                               float(fitted[v]["b"]))
              for v in ("bgnbd", "mbgnbd") if fitted.get(v)}
    inputs = list(zip(t.x.tolist(), t.t_x.tolist(), t.big_t.tolist(), strict=True))
    alive = {v: np.array([p_alive(m, *i) for i in inputs]) for v, m in models.items()}
    expect = {v: np.array([expected_purchases(m, 90, *i) for i in inputs]) for v, m in models.items()}
    product_alive = np.array([m["p_alive"] for m in mets], dtype=float)
    product_e90 = np.array([m["expected_purchases_90d"] for m in mets], dtype=float)
    days = np.array([m["days_since_last_purchase"] for m in mets], dtype=float)
    used = fitted.get("used", "mbgnbd")
    consistency = {
        "used": used,
        "max_abs_diff_p_alive": float(np.max(np.abs(product_alive - alive[used]))) if used in alive else None,
        "max_abs_diff_expected_90d": float(np.max(np.abs(product_e90 - expect[used]))) if used in expect else None,
    }

    def ordinal(dim: str) -> np.ndarray:
        order = ORDINALS[dim]
        return np.array([len(order) - order.index(s[dim]) for s in segs], dtype=float)

    def score_digits(dim: str) -> np.ndarray:
        return np.array([int(s[dim]) for s in segs], dtype=float)

    aucs: list[tuple[str, float]] = [("expected_purchases_90d (product)", auc(product_e90, bought)),
                                     ("p_alive (product)", auc(product_alive, bought))]
    for v in models:
        aucs.append((f"expected purchases 90d, {v} closed form", auc(expect[v], bought)))
        aucs.append((f"P(alive), {v} closed form", auc(alive[v], bought)))
    for dim in ORDINALS:
        aucs.append((f"{dim} segment (ordinal)", auc(ordinal(dim), bought)))
    aucs.append(("rfm_score as R*100+F*10+M", auc(score_digits("rfm_score"), bought)))
    aucs.append(("rfm_quantiles_score as R*100+F*10+M", auc(score_digits("rfm_quantiles_score"), bought)))
    aucs.append(("-days_since_last_purchase", auc(-days, bought)))
    aucs.append(("x (repeat purchase days)", auc(t.x.astype(float), bought)))

    def seg_in(dim: str, names: Sequence[str]) -> np.ndarray:
        return np.array([s[dim] in names for s in segs])

    flags: list[tuple[str, np.ndarray]] = [
        ("churn_risk = high", seg_in("churn_risk", ("high",))),
        ("churn_risk in (high, medium)", seg_in("churn_risk", ("high", "medium"))),
        ("netix in (lost, losing)", seg_in("netix", ("lost", "losing"))),
        ("rfm = lost", seg_in("rfm", ("lost",))),
        ("rfm in (lost, hibernating, about_to_sleep)", seg_in("rfm", SLEEPING)),
        ("rfm_quantiles in (lost, inactive)", seg_in("rfm_quantiles", ("lost", "inactive"))),
        ("rfm_quantiles in (lost, inactive, hibernating, about_to_sleep)",
         seg_in("rfm_quantiles", (*SLEEPING, "inactive"))),
    ]
    flags += [(f"P(alive) < 0.5, {v}", alive[v] < 0.5) for v in models]
    flags.append(("everyone (the base rate)", np.ones(n, dtype=bool)))
    one = t.x == 0
    flag_rows, split_rows, flag_json = [], [], {}
    for name, f in flags:
        s_all = flag_stats(f, churned)
        s_one, s_rep = flag_stats(f[one], churned[one]), flag_stats(f[~one], churned[~one])
        flag_json[name] = {"all": s_all, "one_time": s_one, "repeaters": s_rep}
        flag_rows.append((name, s_all["precision"], s_all["recall"], s_all["f1"], s_all["share"],
                          s_all["balanced_accuracy"]))
        split_rows.append((name, s_one["flagged"], s_one["precision"], s_one["recall"],
                           s_rep["flagged"], s_rep["precision"], s_rep["recall"]))

    scorers = {"expected_purchases_90d": product_e90, "p_alive": product_alive, "-days_since_last_purchase": -days}
    matched_rows, matched_json = [], {}
    for name, f in flags[:7]:
        k = int(f.sum())
        got = {sc: lowest_share(v, churned, k) for sc, v in scorers.items()}
        matched_json[name] = {"share": k / n, "rule": flag_stats(f, churned)["precision"], **got}
        matched_rows.append((name, k / n, matched_json[name]["rule"], *got.values()))

    sweep_rows, sweep_json = [], {}
    for v in models:
        for c in CUTOFFS:
            s = flag_stats(alive[v] < c, churned)
            sweep_json[f"{v} < {c}"] = s
            sweep_rows.append((f"P(alive) < {c}, {v}", s["precision"], s["recall"], s["f1"], s["share"],
                               flag_stats((alive[v] < c)[one], churned[one])["recall"],
                               flag_stats((alive[v] < c)[~one], churned[~one])["recall"]))
        cut, s = best_below(alive[v], churned)
        sweep_json[f"{v} best F1"] = {"cutoff": cut, **s}
        label = f"P(alive) < {cut:.4f}" if math.isfinite(cut) else "flag everyone"
        sweep_rows.append((f"best F1: {label}, {v}", s["precision"], s["recall"], s["f1"], s["share"],
                           flag_stats((alive[v] < cut)[one], churned[one])["recall"],
                           flag_stats((alive[v] < cut)[~one], churned[~one])["recall"]))
    cut, s = best_below(-days, churned)  # -days < cut  <=>  days > -cut
    d_min = int(-cut) + 1 if math.isfinite(cut) else 0
    sweep_json["recency best F1"] = {"days_at_least": d_min, **s}
    recency = days >= d_min
    sweep_rows.append((f"best F1: days_since_last_purchase >= {d_min}", s["precision"], s["recall"], s["f1"],
                       s["share"], flag_stats(recency[one], churned[one])["recall"],
                       flag_stats(recency[~one], churned[~one])["recall"]))

    base = {"customers": n, "churned": int(churned.sum()), "churn_rate": float(churned.mean()),
            "one_time": int(one.sum()), "one_time_churned": int((churned & one).sum()),
            "repeaters": int((~one).sum()), "repeaters_churned": int((churned & ~one).sum())}
    params = {v: fitted.get(v) for v in ("bgnbd", "mbgnbd", "gamma_gamma", "groups", "clients")}
    out = {"base": base, "models": params, "consistency": consistency, "auc_bought_again": dict(aucs),
           "flags_churned": flag_json,
           "precision_at_rule_share": matched_json, "cutoffs": sweep_json, "ordinals": ORDINALS}

    def p(v: str) -> str:
        m = fitted.get(v)
        return "not fitted" if not m else ", ".join(f"{k} {m[k]}" for k in ("r", "alpha", "a", "b"))

    text = [
        f"CDNOW, {n} customers: calibration 1997-01-01 .. {CALIBRATION_END}, holdout {HOLDOUT[0]} .. {HOLDOUT[1]}; "
        f"churned (no purchase in the holdout): {base['churned']} ({base['churn_rate']:.1%}); one-time buyers "
        f"(one purchase day in the calibration): {base['one_time']}, of whom {base['one_time_churned']} churned "
        f"({base['one_time_churned'] / max(1, base['one_time']):.1%}); repeaters: {base['repeaters']}, "
        f"{base['repeaters_churned']} churned ({base['repeaters_churned'] / max(1, base['repeaters']):.1%}).",
        f"Fitted (per day, {fitted.get('groups')} groups of {fitted.get('clients')} clients): BG/NBD {p('bgnbd')}; "
        f"MBG/NBD {p('mbgnbd')}; metrics use {used}. "
        f"Product vs closed form from the raw file: max |diff| p_alive {_sci(consistency['max_abs_diff_p_alive'])}, "
        f"expected_purchases_90d {_sci(consistency['max_abs_diff_expected_90d'])}.",
        "### AUC for \"bought again\" (higher is better; 0.5 = chance)\n\n" + table(("score", "AUC"), aucs),
        "### Flags for \"did not buy again\"\n\n"
        + table(("flag", "precision", "recall", "F1", "share flagged", "balanced acc."), flag_rows),
        "### At the rule's share flagged: precision of the product's scores (lowest first)\n\n"
        "Each rule flag against the same number of customers taken by the lowest score; at an equal share, "
        "recall and F1 order exactly like precision (ties at the boundary shared pro rata).\n\n"
        + table(("rule flag", "share", "rule", "expected_purchases_90d", "p_alive", "-days_since_last_purchase"),
                matched_rows),
        "### The same flags: one-time buyers vs repeaters\n\n"
        + f"One-time buyers: {base['one_time']} ({base['one_time_churned']} churned); repeaters: "
        f"{base['repeaters']} ({base['repeaters_churned']} churned).\n\n"
        + table(("flag", "1x flagged", "1x precision", "1x recall", "rep flagged", "rep precision", "rep recall"),
                split_rows),
        "### P(alive) cutoffs (flag: P(alive) < cutoff), and recency as a baseline\n\n"
        + table(("flag", "precision", "recall", "F1", "share flagged", "1x recall", "rep recall"), sweep_rows),
        "Ordinal orders (best first): " + "; ".join(f"{d}: {' > '.join(o)}" for d, o in ORDINALS.items()) + ".",
    ]
    return out, text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--cdnow", help="path of CDNOW_master.txt (default: the copy in the lifetimes package)")
    ap.add_argument("--as-of", default=AS_OF, help=f"replay's --as-of, on 1998-01-01 UTC (default {AS_OF})")
    ap.add_argument("--cadence", choices=("day", "week", "month"), default="month", help="population cadence")
    ap.add_argument("--workdir", help="keep the replay's outputs in this directory (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="evaluate the replay already in --workdir, do not replay")
    ap.add_argument("--json-out", help="write every number here as JSON")
    args = ap.parse_args(argv)
    as_of = datetime.fromisoformat(args.as_of.replace("Z", "+00:00"))
    if as_of.utcoffset() != timedelta(0) or as_of.date() != HOLDOUT[0]:
        ap.error("--as-of must be an instant on 1998-01-01 in UTC (e.g. 1998-01-01T00:00:00Z)")
    if args.reuse and not args.workdir:
        ap.error("--reuse needs --workdir")

    rows = read_cdnow(cdnow_path(args.cdnow))
    with contextlib.ExitStack() as stack:
        work = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        replay_s = math.nan
        if not args.reuse:
            replay_s = replay(work, rows, args.as_of, args.cadence)
        started = time.perf_counter()
        out, text = evaluate(work, truth(rows, as_of.date()))
        eval_s = time.perf_counter() - started
    out["seconds"] = {"replay": None if math.isnan(replay_s) else round(replay_s, 1), "evaluation": round(eval_s, 1)}
    out["setup"] = {"as_of": args.as_of, "tz": "UTC", "cadence": args.cadence, "rules": list(RULES)}
    print("\n\n".join(text))
    print(f"\nWall time: replay {'(reused)' if math.isnan(replay_s) else f'{replay_s:.1f} s'}, "
          f"evaluation {eval_s:.1f} s.")
    if args.json_out:
        Path(args.json_out).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

