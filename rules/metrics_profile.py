"""Metrics of the client's profile (registered into :data:`rules.metrics.CATALOGUE`)."""

from __future__ import annotations
