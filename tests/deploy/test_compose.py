"""docker-compose.yml: compose-spec JSON schema, then the structure the stack relies on."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_support import DATA, ROOT, find_tool, run

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = DATA / "compose-spec.json"
WORKERS = ("worker-1", "worker-2")
WORKER_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "LOYALTY_RULES",
    "LOYALTY_TIMEZONE",
    "LOYALTY_DATA_DIR",
    "LOYALTY_WEB_PORT",
    "LOYALTY_API_TOKEN",
    "LOYALTY_TOPIC_PARTITIONS",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open() as fh:
        doc = yaml.safe_load(fh)  # resolves the x-* anchors and << merge keys
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> named volume source (short syntax, bind mounts excluded)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        if not source.startswith((".", "/", "~")):
            out[target] = source
    return out


# ------------------------------------------------------------------ schema


def test_compose_file_matches_the_compose_spec_schema(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker-1"]["depends_on"]["kafka"]["condition"] = "service_hungry"
    broken["services"]["redis"]["restart_policy"] = "always"  # not a compose key
    assert len(list(validator.iter_errors(broken))) >= 2


def test_docker_compose_config_accepts_the_file() -> None:
    docker = find_tool("docker")
    if docker is None or run([docker, "compose", "version"]).returncode != 0:
        pytest.skip("`docker compose` plugin not installed: schema + structural checks only")
    res = run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"])
    assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------ structure


def test_expected_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= {
        "kafka", "redis", *WORKERS, "simulator", "prometheus", "grafana",
    }


def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        if "build" in svc:
            continue  # built from deploy/Dockerfile
        assert image, f"{name}: no image and no build"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: tag {tag!r} is not a version"
    assert re.fullmatch(r"apache/kafka:3\.9\.\d+", compose["services"]["kafka"]["image"])
    assert compose["services"]["redis"]["image"].startswith("redis:7")
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:")
    assert compose["services"]["grafana"]["image"].startswith("grafana/grafana:")


def test_workers_build_from_the_dockerfile_and_run_the_worker(compose: dict[str, Any]) -> None:
    for name in (*WORKERS, "simulator"):
        build = compose["services"][name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / build["dockerfile"]).is_file()
    for name in WORKERS:
        # The image's CMD is ["worker"]; a command override would have to say so too.
        assert compose["services"][name].get("command", ["worker"]) == ["worker"]
    assert compose["services"]["simulator"]["command"] == ["produce", "--rate", "200"]
    lookup = compose["services"]["lookup"]
    assert lookup["command"] == ["lookup"] and "kafka" not in lookup["depends_on"]
    assert _env(lookup)["LOYALTY_LOOKUP_PORT"] == "6068"
    assert lookup["ports"] == ["127.0.0.1:6068:6068"]


def test_workers_have_distinct_persistent_data_volumes(compose: dict[str, Any]) -> None:
    seen = set()
    for name in WORKERS:
        svc = compose["services"][name]
        data_dir = _env(svc)["LOYALTY_DATA_DIR"]
        volumes = _named_volumes(svc)
        assert data_dir in volumes, f"{name}: LOYALTY_DATA_DIR {data_dir} is not on a named volume"
        source = volumes[data_dir]
        assert source in compose["volumes"], f"{name}: volume {source} not declared"
        seen.add(source)
    assert len(seen) == len(WORKERS), "workers share a RocksDB volume"


def test_worker_environment(compose: dict[str, Any]) -> None:
    for name in WORKERS:
        env = _env(compose["services"][name])
        missing = [k for k in WORKER_ENV if k not in env]
        assert not missing, f"{name}: missing {missing}"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["LOYALTY_WEB_PORT"] == "6066"
        # Default bind is 127.0.0.1: Prometheus could not scrape the worker.
        assert env["LOYALTY_WEB_HOST"] == "0.0.0.0"
    env = _env(compose["services"]["simulator"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "redis", *WORKERS, "prometheus", "grafana"):
        hc = services[name].get("healthcheck")
        assert hc and not hc.get("disable") and hc.get("test"), f"{name}: no healthcheck"
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in WORKERS:
        assert "/health" in " ".join(services[name]["healthcheck"]["test"])


def test_workers_wait_for_healthy_kafka_and_redis(compose: dict[str, Any]) -> None:
    for name in WORKERS:
        deps = compose["services"][name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
    assert compose["services"]["simulator"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_kraft_single_node(compose: dict[str, Any]) -> None:
    env = _env(compose["services"]["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert env["CLUSTER_ID"]
    listeners = dict(
        item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(",")
    )
    advertised = dict(
        item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    protocol_map = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    protocols = dict(item.split(":", 1) for item in protocol_map.split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert set(listeners) <= set(protocols)
    assert "CONTROLLER" not in advertised
    assert advertised["PLAINTEXT"] == "kafka:9092"
    assert all(not a.startswith("0.0.0.0") for a in advertised.values())
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_LOG_DIRS"] in _named_volumes(compose["services"]["kafka"])


def test_bind_mounts_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for spec in svc.get("volumes", []):
            source = spec.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_grafana_anonymous_viewer_and_provisioning(compose: dict[str, Any]) -> None:
    svc = compose["services"]["grafana"]
    env = _env(svc)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = {s.split(":")[1]: s.split(":")[0] for s in svc["volumes"] if s.startswith("./")}
    prov = "/etc/grafana/provisioning"
    assert mounts[f"{prov}/datasources"] == "./deploy/grafana/provisioning/datasources"
    assert mounts[f"{prov}/dashboards"] == "./deploy/grafana/provisioning/dashboards"
    providers_file = ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml"
    provider = yaml.safe_load(providers_file.read_text())
    dash_path = provider["providers"][0]["options"]["path"]
    assert mounts[dash_path] == "./deploy/grafana/dashboards"
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        rel = Path(home).relative_to(dash_path)
        assert (ROOT / "deploy/grafana/dashboards" / rel).is_file()
