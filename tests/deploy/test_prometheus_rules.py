"""Prometheus scrape config and alert rules: promtool checks and unit tests, plus structure."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    INSTALL_HINT,
    ROOT,
    SCRAPE_METRICS,
    domain_series_names,
    find_tool,
    promql_metric_names,
    run,
)

PROM = DEPLOY / "prometheus"
CONFIG = PROM / "prometheus.yml"
ALERTS = PROM / "alerts.yml"
ALERTS_TEST = PROM / "alerts_test.yml"

REQUIRED_ALERTS = {
    "ConsumerLagGrowing",
    "PartitionStalled",
    "HighDLQRate",
    "TimeTransitionsLate",
    "RedisProjectionFailing",
    "WorkerNotReady",
}


def _load(path: Path) -> Any:
    with path.open() as fh:
        return yaml.safe_load(fh)


def _rules() -> list[dict[str, Any]]:
    return [r for g in _load(ALERTS)["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = find_tool("promtool")
    if path is None:
        pytest.skip(f"promtool not found on PATH ({INSTALL_HINT}: Debian package 'prometheus')")
    return path


# ------------------------------------------------------------------ promtool


def test_promtool_check_config(promtool: str) -> None:
    res = run([promtool, "check", "config", str(CONFIG)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_check_rules(promtool: str) -> None:
    res = run([promtool, "check", "rules", str(ALERTS)])
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    res = run([promtool, "test", "rules", str(ALERTS_TEST)])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_promtool_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The unit tests must fail when a threshold is changed: they really assert something."""
    broken = ALERTS.read_text().replace("> 0.01", "> 0.5")
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    res = run([promtool, "test", "rules", str(tmp_path / "alerts_test.yml")])
    assert res.returncode != 0, "alerts_test.yml did not notice HighDLQRate's threshold change"


# ------------------------------------------------------------------ structure (no promtool)


def test_required_alerts_are_defined_with_severity_and_summary() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules if "alert" in r]
    assert len(names) == len(set(names)), "duplicate alert names"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]
        assert "for" in rule, f"{rule['alert']}: no 'for' duration"


def test_alert_durations_match_the_spec() -> None:
    by_name = {r["alert"]: r for r in _rules()}
    assert by_name["PartitionStalled"]["for"] == "2m"
    assert by_name["HighDLQRate"]["for"] == "10m"
    assert by_name["TimeTransitionsLate"]["for"] == "10m"
    assert by_name["RedisProjectionFailing"]["for"] == "5m"
    assert by_name["WorkerNotReady"]["for"] == "5m"
    assert "[10m" in by_name["ConsumerLagGrowing"]["expr"]
    assert "histogram_quantile(0.99" in by_name["TimeTransitionsLate"]["expr"]
    assert "loyalty_due_lateness_seconds_bucket" in by_name["TimeTransitionsLate"]["expr"]


def test_alert_exprs_use_only_known_metrics() -> None:
    known = domain_series_names() | SCRAPE_METRICS
    for rule in _rules():
        used = promql_metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in expr"
        assert used <= known, f"{rule['alert']}: unknown metrics {sorted(used - known)}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = _load(ALERTS_TEST)
    assert doc["rule_files"] == ["alerts.yml"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in _rules()}
    assert alerts <= fires, f"no firing test for {sorted(alerts - fires)}"
    assert alerts <= quiet, f"no non-firing test for {sorted(alerts - quiet)}"


def test_scrape_config_targets_the_compose_workers() -> None:
    cfg = _load(CONFIG)
    assert cfg["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    worker = jobs["loyalty-worker"]
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in worker["static_configs"] for t in sc["targets"]]
    assert sorted(targets) == ["worker-1:6066", "worker-2:6066"]
    # The alert rules select job="loyalty-worker" (WorkerDown); keep the job name in sync.
    assert 'job="loyalty-worker"' in ALERTS.read_text()

    compose = _load(ROOT / "docker-compose.yml")
    for target in targets:
        host, port = target.split(":")
        assert host in compose["services"], f"{host} is not a compose service"
        env = compose["services"][host]["environment"]
        assert str(env["LOYALTY_WEB_PORT"]) == port


def test_compose_mounts_config_and_rules_where_rule_files_resolves() -> None:
    compose = _load(ROOT / "docker-compose.yml")
    mounts = compose["services"]["prometheus"]["volumes"]
    targets = {m.split(":")[1]: m.split(":")[0] for m in mounts if m.startswith("./")}
    assert targets["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    # rule_files are relative to the config file's directory.
    assert targets["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    command = compose["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


RUNBOOK = ROOT / "docs" / "how-to" / "runbook.md"
RUNBOOK_PARTS = ("**Means.**", "**Check.**", "**Likely causes.**", "**Fix.**", "**Escalate**")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _runbook_sections() -> dict[str, str]:
    """Anchor -> text of every `##` section of the runbook."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {_slug(title): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_alert_links_its_runbook_section() -> None:
    sections = _runbook_sections()
    for rule in _rules():
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "docs/how-to/runbook.md", f"{rule['alert']}: runbook_url {url!r}"
        assert (ROOT / path).is_file()
        assert anchor == _slug(rule["alert"]), f"{rule['alert']}: anchor {anchor!r}"
        assert anchor in sections, f"{rule['alert']}: no section '## {rule['alert']}' in the runbook"
        body = sections[anchor]
        missing = [part for part in RUNBOOK_PARTS if part not in body]
        assert not missing, f"runbook section {rule['alert']} lacks {missing}"


def test_runbook_has_no_section_for_an_unknown_alert() -> None:
    alerts = {_slug(r["alert"]) for r in _rules()}
    for anchor, body in _runbook_sections().items():
        if "**Means.**" in body:
            assert anchor in alerts, f"runbook section #{anchor} names no alert of alerts.yml"


def test_runbook_links_resolve() -> None:
    """Relative links of the runbook point at existing files and, with a #fragment, at an
    existing heading of that file."""
    text = RUNBOOK.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, fragment = target.partition("#")
        file = (RUNBOOK.parent / path).resolve() if path else RUNBOOK
        assert file.exists(), f"runbook links to a missing {target}"
        if fragment and file.suffix == ".md":
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.MULTILINE)}
            assert fragment in headings, f"runbook links to a missing heading {target}"
