"""docker-compose.yml: compose-spec JSON schema, then the structure the stack relies on."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from deploy_support import DATA, ROOT, compose_interpolate, find_tool, run, unknown_variables

from app.settings import Settings

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = DATA / "compose-spec.json"
WORKERS = ("worker-1", "worker-2")
KAFKA_CLIENTS = (*WORKERS, "simulator")
# What `docker compose up` needs from the shell (LOYALTY_API_TOKEN is required).
SHELL = {"LOYALTY_API_TOKEN": "0123456789abcdef0123456789abcdef"}
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


def _resolved(service: dict[str, Any], shell: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose passes it, variables read from ``shell``."""
    return {k: compose_interpolate(v, shell) for k, v in _env(service).items()}


def _image_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the loyalty-stream image (and so read app/settings.py)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


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
        env = _resolved(compose["services"][name], SHELL)
        missing = [k for k in WORKER_ENV if k not in env]
        assert not missing, f"{name}: missing {missing}"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["REDIS_URL"].startswith("redis://redis:6379")
        assert env["LOYALTY_WEB_PORT"] == "6066"
        # Default bind is 127.0.0.1: Prometheus could not scrape the worker.
        assert env["LOYALTY_WEB_HOST"] == "0.0.0.0"
    env = _resolved(compose["services"]["simulator"], SHELL)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


# ------------------------------------------------------------------ settings


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    """A misspelt variable is silently ignored by the service: fail here instead."""
    services = _image_services(compose)
    assert set(services) >= {*KAFKA_CLIENTS, "lookup"}
    for name, svc in services.items():
        assert not unknown_variables(_env(svc)), f"{name}: not a setting of app/settings.py"
    for anchor in ("x-loyalty-env", "x-kafka-env"):
        assert not unknown_variables(compose[anchor]), anchor


def test_unknown_variables_catches_a_typo() -> None:
    assert unknown_variables(["LOYALTY_REPLICATON_FACTOR", "KAFKA_SASL_PASSWORD_FILE",
                              "LOYALTY_API_TOKEN_FILE", "POD_IP"]) == ["LOYALTY_REPLICATON_FACTOR"]


def test_every_service_of_the_image_starts_with_the_default_settings(
    compose: dict[str, Any],
) -> None:
    for name, svc in _image_services(compose).items():
        settings = Settings.from_env(_resolved(svc, SHELL))
        settings.check_serving()
        assert settings.replication_factor == 1, name  # the local stack has one broker
        assert settings.min_insync_replicas == 1, name
        assert settings.kafka_security_protocol == "PLAINTEXT", name


def test_replication_is_one_by_default_and_overridable(compose: dict[str, Any]) -> None:
    for name in KAFKA_CLIENTS:
        svc = compose["services"][name]
        raw = _env(svc)
        for var in ("LOYALTY_REPLICATION_FACTOR", "LOYALTY_MIN_INSYNC_REPLICAS"):
            assert raw[var] == f"${{{var}:-1}}", f"{name}: {var}"
        real = _resolved(svc, {**SHELL, "LOYALTY_REPLICATION_FACTOR": "3",
                               "LOYALTY_MIN_INSYNC_REPLICAS": "2",
                               "KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092,b3:9092"})
        settings = Settings.from_env(real)
        assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)
        assert settings.kafka_bootstrap == "b1:9092,b2:9092,b3:9092"


def test_secured_kafka_from_the_shell(compose: dict[str, Any], tmp_path: Path) -> None:
    """The Kafka security variables are empty (off) by default and reach every Kafka client."""
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    shell = {**SHELL, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
             "KAFKA_SASL_USERNAME": "loyalty", "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
             "KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"), "KAFKA_SSL_CHECK_HOSTNAME": "false"}
    for name in KAFKA_CLIENTS:
        svc = compose["services"][name]
        assert not {k: v for k, v in _resolved(svc, SHELL).items()
                    if k.startswith("KAFKA_") and k != "KAFKA_BOOTSTRAP_SERVERS" and v}, name
        settings = Settings.from_env(_resolved(svc, shell))
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"
        assert settings.kafka_sasl_username == "loyalty"
        assert settings.kafka_sasl_password.get_secret_value() == "s3cret"
        assert settings.kafka_ssl_cafile == str(tmp_path / "ca.pem")
        assert settings.kafka_ssl_check_hostname is False


def test_lookup_gets_no_kafka_settings(compose: dict[str, Any]) -> None:
    """The lookup server reads Redis only: Kafka credentials set for the workers must not
    reach it (nor stop it: it validates every setting at start)."""
    env = _env(compose["services"]["lookup"])
    kafka = [k for k in env if k.startswith("KAFKA_") or k in (
        "LOYALTY_REPLICATION_FACTOR", "LOYALTY_MIN_INSYNC_REPLICAS", "LOYALTY_ADVERTISED_URL")]
    assert not kafka
    assert "secrets" not in compose["services"]["lookup"]


def test_each_worker_advertises_its_own_url(compose: dict[str, Any]) -> None:
    """Workers ask each other for cluster-wide answers at LOYALTY_ADVERTISED_URL: it names the
    worker's own service (a compose DNS name) and the port its API listens on."""
    urls = {}
    for name in WORKERS:
        svc = compose["services"][name]
        env = _resolved(svc, SHELL)
        url = urlsplit(env["LOYALTY_ADVERTISED_URL"])
        assert url.scheme == "http" and url.path in ("", "/"), name
        assert url.hostname == name, f"{name}: advertises {url.hostname}"
        assert url.port == int(env["LOYALTY_WEB_PORT"]), name
        assert Settings.from_env(env).canonical_url == f"http://{name}:{url.port}"
        urls[name] = env["LOYALTY_ADVERTISED_URL"]
    assert len(set(urls.values())) == len(WORKERS), urls


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
