"""Shared helpers for tests/deploy: repo paths, tool lookup, PromQL metric-name extraction,
the environment variable names the service reads, compose variable interpolation."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DATA = Path(__file__).resolve().parent / "data"

INSTALL_HINT = "run deploy/local/install-tools.sh"

# Metric names the worker exposes (the ops contract), with their Prometheus types.
def _domain_metrics() -> dict[str, str]:
    """Exported series names of the worker's metrics (app.metrics.SPECS, the one declaration)."""
    from app.metrics import SPECS

    out: dict[str, str] = {}
    for spec in SPECS:
        kind = spec.kind.__name__.lower()
        out[spec.name + ("_total" if kind == "counter" else "")] = kind
    return out


DOMAIN_METRICS: dict[str, str] = _domain_metrics()

# Series Prometheus itself attaches to every target.
SCRAPE_METRICS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def domain_series_names() -> set[str]:
    """Every series name the domain metrics produce (histograms: _bucket/_sum/_count)."""
    names: set[str] = set()
    for name, kind in DOMAIN_METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def base_metric(series: str) -> str:
    """loyalty_processing_seconds_bucket -> loyalty_processing_seconds (others unchanged)."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = series[: -len(suffix)]
        if series.endswith(suffix) and DOMAIN_METRICS.get(base) == "histogram":
            return base
    return series


def faust_series_names(prefix: str = "loyalty") -> set[str] | None:
    """Series names of Faust's Prometheus sensor with this prefix, or None without faust."""
    try:
        from faust.sensors.prometheus import FaustMetrics
        from prometheus_client import CollectorRegistry
    except Exception:
        return None
    registry = CollectorRegistry()
    FaustMetrics.create(registry, prefix)
    names: set[str] = set()
    for family in registry.collect():
        kind = family.type
        name = family.name
        if kind == "counter":
            names.add(f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels removed).

    Good enough for the expressions in this repo; not a full PromQL parser.
    """
    s = _STRING.sub('""', expr)
    s = _MATCHERS.sub("", s)
    s = _RANGES.sub("", s)
    s = _GROUPING.sub("", s)
    s = re.sub(r"\$\w+", "", s)  # Grafana variables outside matchers
    names = set()
    for m in _IDENT.finditer(s):
        ident, call = m.group(1), m.group(2)
        if call or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names


def grafana_expr_for_promtool(expr: str) -> str:
    """Replace Grafana's template variables so promtool can parse the expression."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
    expr = expr.replace("$__interval", "15s")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def find_tool(name: str) -> str | None:
    """A command named by $<NAME> (e.g. PROMTOOL=/path/to/promtool), on PATH, or next to
    this interpreter (the project venv's bin/)."""
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        return override
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return None


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)  # type: ignore[call-overload, no-any-return]


# ------------------------------------------------------------------ settings variables

# Set by the deploy files but not read by app/settings.py: POD_IP (Kubernetes downward API,
# expanded into LOYALTY_ADVERTISED_URL) and LOYALTY_TOPIC_PARTITIONS (the ops-brief name of
# LOYALTY_PARTITIONS, kept equal to it).
EXTRA_VARIABLES = frozenset({"POD_IP", "LOYALTY_TOPIC_PARTITIONS"})


def setting_variables() -> frozenset[str]:
    """Every environment variable the service reads (app.settings), secrets' <NAME>_FILE
    included, plus EXTRA_VARIABLES."""
    from app.settings import SECRET_VARIABLES, Settings

    names = {str(info.validation_alias) for info in Settings.model_fields.values()}
    names |= {f"{name}_FILE" for name in SECRET_VARIABLES}
    return frozenset(names | EXTRA_VARIABLES)


def unknown_variables(names: object) -> list[str]:
    """The names among ``names`` that no setting reads (typos), sorted."""
    known = setting_variables()
    return sorted(str(n) for n in names if str(n) not in known)  # type: ignore[attr-defined]


_COMPOSE_VAR = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def compose_interpolate(value: str, env: dict[str, str]) -> str:
    """``value`` with docker compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``$VAR`` and ``$$`` resolved from ``env`` (a missing required variable
    raises KeyError, as compose stops)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        unset = name not in env or (op is not None and op.startswith(":") and env[name] == "")
        if op in (":-", "-"):
            return arg if unset else env[name]
        if op in (":?", "?"):
            if unset:
                raise KeyError(f"{name}: {arg}")
            return env[name]
        return env.get(name, "")

    return _COMPOSE_VAR.sub(sub, value)
