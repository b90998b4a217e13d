"""Predictive models of customer-base analysis, as pure functions: BG/NBD and MBG/NBD for
purchases and dropout (:mod:`rules.predict.bgnbd`), Gamma-Gamma for spend
(:mod:`rules.predict.gamma_gamma`), and their population aggregate and fit at a snapshot
(:mod:`rules.predict.snapshot`). The metrics that apply them to a client are in
:mod:`rules.metrics.predictive`."""

from rules.predict.bgnbd import PurchaseModel, days_to_next_purchase, expected_purchases, fit, p_alive
from rules.predict.gamma_gamma import SpendModel, expected_spend, fit_spend

__all__ = ["PurchaseModel", "SpendModel", "days_to_next_purchase", "expected_purchases", "expected_spend",
           "fit", "fit_spend", "p_alive"]
