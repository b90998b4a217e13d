"""The population snapshot as JSON (``loyalty replay --population-out``, the stream's
snapshot topic): documented keys, see docs/explanation/population.md."""

from __future__ import annotations

from typing import Any

from rules import Engine
from rules.calendar import iso
from rules.population import PREDICTIVE, RELATIVE_ACCURACY, Snapshot


def snapshot_json(engine: Engine, snapshot: Snapshot | None) -> dict[str, Any]:
    """``instant`` (ISO 8601 UTC), ``version`` (a hash of instant and values), ``clients``
    (with a purchase), ``values`` (name -> what rules read as ``population.<name>``),
    ``statistics`` (name -> its definition), ``relative_accuracy`` (money sketches) and, when a
    rule set reads a predictive metric, ``models``: the fitted BG/NBD, MBG/NBD and Gamma-Gamma
    parameters (also ``values.predictive``; docs/explanation/predictive.md).
    ``instant`` and ``version`` are null when no client had a purchase."""
    stats = {name: {"kind": st.kind, "metric": st.metric or None, "per": st.per or None,
                    "at": st.at if st.kind in ("percentile", "pareto") else None, "where": st.where}
             for name, st in sorted(engine.spec.stats.items())}
    out = {
        "instant": iso(snapshot.instant) if snapshot else None,
        "version": snapshot.version if snapshot else None,
        "clients": snapshot.clients if snapshot else 0,
        "values": dict(sorted(snapshot.values.items())) if snapshot else {},
        "statistics": stats,
        "relative_accuracy": RELATIVE_ACCURACY,
    }
    if engine.spec.models:
        out["models"] = snapshot.values.get(PREDICTIVE.name) if snapshot else None
    return out
