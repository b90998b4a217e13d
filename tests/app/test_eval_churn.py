"""The measures of ``bench/eval_churn.py`` (the holdout evaluation of churn_risk) against
brute force on small data with ties: AUC by pair counting, the best-F1 cutoff by trying
every cutoff, precision at a share by averaging over the orders of the tied."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "eval_churn.py"
    spec = importlib.util.spec_from_file_location("eval_churn", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_churn"] = module
    spec.loader.exec_module(module)
    return module


ec = _bench()


def _data(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 6, n).astype(float), rng.random(n) < 0.6  # many ties


@pytest.mark.parametrize("seed", range(5))
def test_auc_is_the_pair_count_with_ties_half(seed: int) -> None:
    score, positive = _data(seed)
    pos, neg = score[positive], score[~positive]
    pairs = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert ec.auc(score, positive) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


def test_auc_extremes() -> None:
    y = np.array([False, False, True, True])
    assert ec.auc(np.array([1.0, 2, 3, 4]), y) == 1.0
    assert ec.auc(np.array([4.0, 3, 2, 1]), y) == 0.0
    assert ec.auc(np.ones(4), y) == 0.5
    assert math.isnan(ec.auc(np.ones(4), np.zeros(4, dtype=bool)))


def test_flag_stats() -> None:
    flag = np.array([True, True, False, False, True])
    churned = np.array([True, False, True, False, True])
    s = ec.flag_stats(flag, churned)
    assert (s["tp"], s["flagged"], s["churned"]) == (2, 3, 3)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["share"] == pytest.approx(0.6)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_best_below_is_the_best_of_every_cutoff(seed: int) -> None:
    values, churned = _data(seed)
    cut, stats = ec.best_below(values, churned)
    candidates = [*np.unique(values).tolist(), math.inf]
    best = max(ec.flag_stats(values < c, churned)["f1"] for c in candidates)
    assert stats["f1"] == pytest.approx(best)
    assert stats == ec.flag_stats(values < cut, churned)


def test_lowest_share_averages_the_tied() -> None:
    score = np.array([1.0, 2, 2, 2, 3])
    churned = np.array([True, True, False, False, True])
    for k in range(1, 6):
        orders = []
        for perm in itertools.permutations(range(5)):  # every order of the tied, equally likely
            place = {i: r for r, i in enumerate(perm)}
            orders.append(sorted(range(5), key=[(score[i], place[i]) for i in range(5)].__getitem__))
        mean = sum(churned[o[:k]].sum() for o in orders) / len(orders) / k
        assert ec.lowest_share(score, churned, k) == pytest.approx(mean), k
