"""The metric catalogue: every name a rule condition may use (:mod:`rules.metrics.base`:
purchases and the profile's older fields; :mod:`rules.metrics.comm`: communications;
:mod:`rules.metrics.profile`: the richer profile; :mod:`rules.metrics.predictive`:
the population's models). Importing the package registers them all.
"""

import rules.metrics.comm
import rules.metrics.predictive
import rules.metrics.profile  # noqa: F401 -- registers its metrics
from rules.metrics.base import CATALOGUE, SAMPLES, Metric, MetricView, catalogue_markdown, money_text

__all__ = ["CATALOGUE", "SAMPLES", "Metric", "MetricView", "catalogue_markdown", "money_text"]
