"""Predictive models of customer-base analysis, as pure functions: BG/NBD and MBG/NBD for
purchases and dropout (:mod:`rules.predict.bgnbd`), Gamma-Gamma for spend
(:mod:`rules.predict.gamma_gamma`), and their population aggregate and fit at a snapshot
(:mod:`rules.predict.snapshot`). The metrics that apply them to a client are in
:mod:`rules.metrics.predictive`.

Public surface::

    from rules.predict import PurchaseModel, fit, p_alive, expected_purchases, days_to_next_purchase
    from rules.predict import SpendModel, fit_spend, expected_spend, clv
"""

from rules.predict.bgnbd import (
    MIN_CLIENTS,
    MIN_REPEATERS,
    PurchaseModel,
    days_to_next_purchase,
    expected_purchases,
    fit,
    log_likelihood,
    p_alive,
)
from rules.predict.gamma_gamma import MIN_SPENDERS, SpendModel, clv, expected_spend, fit_spend, spend_log_likelihood

__all__ = [
    "MIN_CLIENTS", "MIN_REPEATERS", "MIN_SPENDERS", "PurchaseModel", "SpendModel", "clv",
    "days_to_next_purchase", "expected_purchases", "expected_spend", "fit", "fit_spend",
    "log_likelihood", "p_alive", "spend_log_likelihood",
]
