"""Grafana provisioning and the loyalty dashboard: JSON shape, datasource uid, layout,
metric names used by the queries, and PromQL syntax (promtool, when installed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    DOMAIN_METRICS,
    INSTALL_HINT,
    ROOT,
    SCRAPE_METRICS,
    base_metric,
    domain_series_names,
    faust_series_names,
    find_tool,
    grafana_expr_for_promtool,
    promql_metric_names,
    run,
)

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "loyalty.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert doc["apiVersion"] == 1
    sources = doc["datasources"]
    assert len(sources) == 1
    return sources[0]  # type: ignore[no-any-return]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves excluded."""
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p["targets"]]


# ------------------------------------------------------------------ provisioning


def test_datasource_provisioning(datasource: dict[str, Any]) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["uid"]
    assert datasource["access"] == "proxy"
    # The compose service name and port of Prometheus.
    assert datasource["url"] == "http://prometheus:9090"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "prometheus" in compose["services"]
    assert any(p.endswith(":9090") for p in compose["services"]["prometheus"]["ports"])


def test_dashboard_provider() -> None:
    doc = yaml.safe_load(PROVIDERS.read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


# ------------------------------------------------------------------ dashboard JSON


def test_dashboard_top_level(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"]
    assert dashboard.get("id") is None, "provisioned dashboards must not carry a database id"
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert dashboard["time"]["from"].startswith("now-")


def test_panel_ids_unique_and_layout_fits_the_grid(dashboard: dict[str, Any]) -> None:
    nested = [p for r in dashboard["panels"] for p in r.get("panels", [])]
    every = list(dashboard["panels"]) + nested
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} overflows the 24-column grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_the_provisioned_datasource(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    """Portable: every panel and variable queries the `datasource` variable, whose default is
    the provisioned one (an imported dashboard picks any Prometheus)."""
    uid = "${datasource}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    panels = _panels(dashboard)
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"{panel['title']}: empty expr"
            assert target.get("datasource", {"uid": uid})["uid"] == uid, panel["title"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            assert var["datasource"]["uid"] == uid, var["name"]


def _lookup_series() -> set[str]:
    """The lookup server's series (app.lookup.stats)."""
    from app.lookup.stats import Stats

    names: set[str] = set()
    for family in Stats().collect():
        names |= {s.name for s in family.samples}
        names |= {f"{family.name}_total"} if family.type == "counter" else {family.name, f"{family.name}_bucket"}
    return names


def test_exprs_reference_only_known_metrics(dashboard: dict[str, Any]) -> None:
    faust = faust_series_names()
    known = domain_series_names() | SCRAPE_METRICS | _lookup_series()
    for title, expr in _exprs(dashboard):
        used = promql_metric_names(expr)
        assert used, f"{title}: no metric in {expr!r}"
        for name in used - known:
            assert name.startswith("loyalty_"), f"{title}: {name}: not a domain/Faust metric"
            if faust is not None:
                assert name in faust, f"{title}: {name}: not a series of Faust's sensor"


def test_dashboard_covers_every_domain_metric(dashboard: dict[str, Any]) -> None:
    used = {base_metric(n) for _, e in _exprs(dashboard) for n in promql_metric_names(e)}
    missing = set(DOMAIN_METRICS) - used
    assert not missing, f"no panel for {sorted(missing)}"


def test_depends_on_faust_metrics_in_at_most_two_panels(dashboard: dict[str, Any]) -> None:
    domain = domain_series_names() | SCRAPE_METRICS | _lookup_series()
    faust_panels = {
        p["title"] for p in _panels(dashboard) for t in p["targets"]
        if promql_metric_names(t["expr"]) - domain
    }
    assert len(faust_panels) <= 2, sorted(faust_panels)


def test_required_views_exist(dashboard: dict[str, Any]) -> None:
    exprs = "\n".join(e for _, e in _exprs(dashboard))
    assert "sum by (outcome) (rate(loyalty_receipts_total" in exprs
    assert "sum by (reason) (rate(loyalty_receipts_rejected_total" in exprs
    for q in ("0.5", "0.99"):
        assert (
            f"histogram_quantile({q}, sum by (le, kind) (rate(loyalty_processing_seconds_bucket"
            in exprs
        )
    assert "histogram_quantile(0.99, sum by (le) (rate(loyalty_due_lateness_seconds_bucket" in exprs
    assert "max by (topic, partition) (loyalty_consumer_lag" in exprs
    assert "max by (dimension, segment) (loyalty_segment_clients" in exprs
    assert (
        "sum by (dimension, from_segment, to_segment) (rate(loyalty_segment_transitions_total"
        in exprs
    )


def test_dashboard_metrics_exist_in_app_metrics(dashboard: dict[str, Any]) -> None:
    """Cross-check with the worker's own registry, when the app package can be imported."""
    try:
        from app.metrics import Metrics
    except Exception as exc:
        pytest.skip(f"app.metrics not importable ({exc.__class__.__name__}): contract list only")
    registry = Metrics.create().registry
    exported = set()
    for family in registry.collect():
        kind = family.type
        if kind == "counter":
            exported.add(f"{family.name}_total")
        elif kind == "histogram":
            exported |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            exported.add(family.name)
    used = {n for _, e in _exprs(dashboard) for n in promql_metric_names(e)} & domain_series_names()
    assert used <= exported, f"metrics the worker does not define: {sorted(used - exported)}"


def test_exprs_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = find_tool("promtool")
    if promtool is None:
        pytest.skip(f"promtool not found on PATH ({INSTALL_HINT}): PromQL syntax not checked")
    rules = [
        {"record": f"dashboard:check:{i}", "expr": grafana_expr_for_promtool(expr)}
        for i, (_, expr) in enumerate(_exprs(dashboard))
    ]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["definition"]
            assert query.startswith("label_values(")
            selector = query[len("label_values("):].rsplit(",", 1)[0]
            rules.append({"record": "dashboard:check:var", "expr": selector})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = run([promtool, "check", "rules", str(path)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_jobs_are_variables_and_global_gauges_are_never_summed(dashboard: dict[str, Any]) -> None:
    """One worker exports the cluster-wide sizes (two for a moment during a rebalance): a
    panel takes the max per segment over every instance; the jobs are variables."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["job"]["current"]["value"] == "loyalty-worker"
    assert variables["lookup_job"]["current"]["value"] == "loyalty-lookup"
    for title, expr in _exprs(dashboard):
        assert 'job="' not in expr, f"{title}: a hardcoded job in {expr!r}"
        assert 'job=~"$job"' in expr or 'job=~"$lookup_job"' in expr, f"{title}: {expr!r}"
        if "loyalty_segment_clients" in expr:
            assert "max by (dimension, segment) (loyalty_segment_clients{" in expr and "sum" not in expr
            assert "$instance" not in expr, title  # the exporting worker may be any instance


def test_the_lookup_server_has_its_panels(dashboard: dict[str, Any]) -> None:
    lookup = {n for _, e in _exprs(dashboard) if "$lookup_job" in e for n in promql_metric_names(e)}
    assert {"loyalty_lookup_requests_total", "loyalty_lookup_seconds_bucket", "loyalty_lookup_memory_hits_total",
            "loyalty_lookup_reads_total", "loyalty_lookup_invalidation_live", "up"} <= lookup


# ------------------------------------------------------------------ portability, aggregation

_JOB_MATCHER = re.compile(r'\bjob\s*(=~|!~|!=|=)\s*"([^"]*)"')
_JOB_NAMES = ("loyalty-worker", "loyalty-lookup")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of the JSON document, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for var in dashboard["templating"]["list"]:
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out += [(f"variable {var['name']}", var["definition"]), (f"variable {var['name']}", query)]
    return out


def test_dashboard_file_is_plain_json() -> None:
    text = DASHBOARD.read_text()
    data = json.loads(text)
    assert json.dumps(data, indent=2) + "\n" == text, "not formatted as json.dumps(indent=2)"


def test_no_hardcoded_datasource_anywhere(dashboard: dict[str, Any], datasource: dict[str, Any]) -> None:
    """Every datasource reference (panels, targets, variables) is the variable; the provisioned
    uid appears only as the variable's default."""
    refs = [v for k, v in _walk(dashboard) if k == "datasource"]
    assert refs
    for ref in refs:
        if isinstance(ref, dict) and ref.get("type") == "grafana":
            continue  # the built-in annotations
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, ref
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    without_default = json.dumps({**dashboard, "templating": {"list": [
        v for n, v in variables.items() if n != "datasource"]}})
    assert datasource["uid"] not in without_default


def test_no_expression_names_a_job(dashboard: dict[str, Any]) -> None:
    """Jobs are selected by the `job` / `lookup_job` variables only, in panels and in the
    other variables' queries; the job names appear only as those variables' defaults."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name, default in (("job", "loyalty-worker"), ("lookup_job", "loyalty-lookup")):
        var = variables[name]
        assert var["type"] == "query" and var["definition"] == "label_values(up, job)", name
        assert var["current"]["value"] == default and not var.get("includeAll"), name
    assert "$job" in variables["instance"]["definition"]
    for title, expr in _exprs(dashboard) + _variable_queries(dashboard):
        for op, value in _JOB_MATCHER.findall(expr):
            assert (op, value) in {("=~", "$job"), ("=~", "$lookup_job")}, f"{title}: job{op}{value!r}"
        for job in _JOB_NAMES:
            assert job not in expr, f"{title}: hardcoded {job} in {expr!r}"
    rest = json.dumps({**dashboard, "templating": {"list": [
        v for n, v in variables.items() if n not in ("job", "lookup_job")]}})
    for job in _JOB_NAMES:
        assert job not in rest, f"{job} hardcoded outside the job variables' defaults"


def _documented_series() -> dict[str, set[str]]:
    """Series names per section of docs/reference/prometheus-metrics.md (generated from the
    code): 'worker' (domain and Faust message-flow metrics) and 'lookup'."""
    text = (ROOT / "docs" / "reference" / "prometheus-metrics.md").read_text()
    out: dict[str, set[str]] = {"worker": set(), "lookup": set()}
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = "lookup" if "lookup" in line.lower() else "worker"
            continue
        m = re.match(r"\| `(loyalty_\w+)` \| (counter|gauge|histogram) \|", line)
        if m and section:
            name, kind = m.groups()
            out[section] |= ({f"{name}_total"} if kind == "counter" else
                             {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram"
                             else {name})
    assert out["worker"] and out["lookup"], "metrics reference not parsed"
    return out


def test_every_loyalty_metric_exists(dashboard: dict[str, Any]) -> None:
    """Worker panels use metrics of the worker's reference (domain + Faust message flow);
    lookup panels use the lookup server's (app/lookup/stats.py, as documented)."""
    documented = _documented_series()
    lookup = _lookup_series()
    assert documented["lookup"] <= lookup, "metrics reference out of date: python -m app.reference"
    for title, expr in _exprs(dashboard):
        used = {n for n in promql_metric_names(expr) if n.startswith("loyalty_")}
        if "$lookup_job" in expr:
            assert used <= documented["lookup"] & lookup, f"{title}: {sorted(used - lookup)}"
        else:
            assert used <= documented["worker"], f"{title}: {sorted(used - documented['worker'])}"


def _occurrences(expr: str, metric: str) -> list[str]:
    """The text before each selector of ``metric`` in ``expr``."""
    return [expr[: m.start()] for m in re.finditer(rf"\b{metric}\b", expr)]


def test_global_gauge_is_never_summed_over_instances(dashboard: dict[str, Any]) -> None:
    """loyalty_segment_clients is cluster-wide and exported by one worker (two during a
    rebalance): only max per (dimension, segment), never sum/avg/count, never by instance."""
    seen = 0
    for title, expr in _exprs(dashboard):
        before = _occurrences(expr, "loyalty_segment_clients")
        for prefix in before:
            seen += 1
            assert prefix.endswith("max by (dimension, segment) ("), f"{title}: {expr!r}"
        if before:
            assert not re.search(r"\b(sum|avg|count|increase|rate)\b", expr), f"{title}: {expr!r}"
            assert "$instance" not in expr, f"{title}: the exporting worker may be any instance"
    assert seen >= 2


def test_partition_gauges_count_each_partition_once(dashboard: dict[str, Any]) -> None:
    """The old and the new owner of a partition may both export its lag or stall flag for a
    moment: a partition's value is the max over workers, and only then summed."""
    for metric in ("loyalty_consumer_lag", "loyalty_partition_stalled"):
        for title, expr in _exprs(dashboard):
            for prefix in _occurrences(expr, metric):
                assert prefix.endswith("max by (topic, partition) ("), f"{title}: {expr!r}"
