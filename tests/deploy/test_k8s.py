"""deploy/k8s manifests: structure, probes, security, storage; schema-validated when
kubernetes-validate is installed, rendered with kustomize when it is on PATH."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import DEPLOY, INSTALL_HINT, find_tool, run, unknown_variables

from app.settings import Settings

K8S = DEPLOY / "k8s"
NAMESPACE = "loyalty"
WEB_PORT = 6066
CLUSTER_SCOPED = {"Namespace"}
KAFKA_SECRET = "loyalty-kafka"
KAFKA_DIR = "/etc/loyalty/kafka"
POD_IP = "10.1.2.3"  # what the downward API would give
EXPECTED_KINDS = {
    "Namespace", "ConfigMap", "Secret", "StatefulSet", "Service", "PodDisruptionBudget",
    "Deployment",
}


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in _manifest_files():
        with path.open() as fh:
            for doc in yaml.safe_load_all(fh):
                if doc is not None:
                    out.append((path, doc))
    return out


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in _docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def sts() -> dict[str, Any]:
    return _one("StatefulSet")


@pytest.fixture(scope="module")
def container(sts: dict[str, Any]) -> dict[str, Any]:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}


_REF = re.compile(r"\$\((\w+)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a variable defined before, else left as is."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _pod_env(container: dict[str, Any], downward: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it from the manifests: envFrom
    (ConfigMaps, Secrets), then env in order (wins; $(VAR) expands earlier names)."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "configMapRef" in ref:
            env.update(_one("ConfigMap", ref["configMapRef"]["name"])["data"])
        if "secretRef" in ref:
            env.update(_secret_data(_one("Secret", ref["secretRef"]["name"])))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        else:
            env[item["name"]] = downward[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _secret_files(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mounted path -> content of every Secret item the container mounts."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            continue
        data = _secret_data(_one("Secret", secret["secretName"]))
        items = secret.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            out[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = data[item["key"]]
    return out


def _settings(env: dict[str, str], files: dict[str, str], tmp_path: Path) -> Settings:
    """Settings.from_env(env), every path in ``files`` written under tmp_path instead."""
    local = {}
    for i, (path, content) in enumerate(sorted(files.items())):
        target = tmp_path / f"{i}-{Path(path).name}"
        target.write_text(content)
        local[path] = str(target)
    return Settings.from_env({k: local.get(v, v) for k, v in env.items()})


def _probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        port = named[port]
    return int(port)


# ------------------------------------------------------------------ every manifest


def test_every_manifest_has_api_version_kind_and_metadata() -> None:
    docs = _docs()
    assert docs
    for path, doc in docs:
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], path.name
        assert isinstance(doc.get("kind"), str) and doc["kind"], path.name
        meta = doc.get("metadata") or {}
        assert meta.get("name"), f"{path.name}: {doc['kind']} without metadata.name"
        if doc["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']} namespace"
        assert meta.get("labels", {}).get("app.kubernetes.io/name") == "loyalty-stream"
    assert {d["kind"] for _, d in docs} == EXPECTED_KINDS


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    assert kust["namespace"] == NAMESPACE
    assert sorted(kust["resources"]) == sorted(p.name for p in _manifest_files())
    image_names = {i["name"] for i in kust.get("images", [])}
    containers = _one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert {c["image"].split(":")[0] for c in containers} <= image_names


# ------------------------------------------------------------------ StatefulSet


def test_statefulset_shape(sts: dict[str, Any]) -> None:
    assert sts["apiVersion"] == "apps/v1"
    spec = sts["spec"]
    assert spec["replicas"] == 2
    selector = spec["selector"]["matchLabels"]
    labels = spec["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    headless = _one("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_probes_hit_health_and_ready_on_the_web_port(
    container: dict[str, Any],
) -> None:
    liveness = container["livenessProbe"]
    readiness = container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/health"
    assert readiness["httpGet"]["path"] == "/ready"
    assert _probe_port(liveness, container) == WEB_PORT
    assert _probe_port(readiness, container) == WEB_PORT
    if "startupProbe" in container:
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert _probe_port(container["startupProbe"], container) == WEB_PORT
    assert WEB_PORT in {p["containerPort"] for p in container["ports"]}


def test_runs_as_non_root_uid_10001(sts: dict[str, Any], container: dict[str, Any]) -> None:
    pod_sc = sts["spec"]["template"]["spec"].get("securityContext", {})
    c_sc = container.get("securityContext", {})
    merged = {**pod_sc, **c_sc}
    assert merged.get("runAsNonRoot") is True
    assert merged.get("runAsUser") == 10001
    assert pod_sc.get("fsGroup") == 10001, "PVC must be writable by uid 10001"
    # Pod Security "restricted" (the namespace enforces it).
    assert c_sc.get("allowPrivilegeEscalation") is False
    assert c_sc.get("capabilities", {}).get("drop") == ["ALL"]
    seccomp = c_sc.get("seccompProfile") or pod_sc.get("seccompProfile")
    assert seccomp and seccomp["type"] in {"RuntimeDefault", "Localhost"}
    ns = _one("Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_requests_and_limits(container: dict[str, Any]) -> None:
    res = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res[section]), section


def test_rocksdb_on_a_volume_claim_template(sts: dict[str, Any], container: dict[str, Any]) -> None:
    templates = sts["spec"]["volumeClaimTemplates"]
    assert templates
    claim = templates[0]
    assert "ReadWriteOnce" in claim["spec"]["accessModes"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    data_dir = _one("ConfigMap")["data"]["LOYALTY_DATA_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(data_dir) == claim["metadata"]["name"]


def test_env_from_configmap_and_secret(container: dict[str, Any]) -> None:
    refs = container["envFrom"]
    cm_names = {r["configMapRef"]["name"] for r in refs if "configMapRef" in r}
    secret_names = {r["secretRef"]["name"] for r in refs if "secretRef" in r}
    cm = _one("ConfigMap")
    secret = _one("Secret", "loyalty-secrets")
    assert cm["metadata"]["name"] in cm_names
    assert secret["metadata"]["name"] in secret_names
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "LOYALTY_RULES", "LOYALTY_TIMEZONE",
                "LOYALTY_DATA_DIR", "LOYALTY_WEB_PORT", "LOYALTY_TOPIC_PARTITIONS"):
        assert key in cm["data"], key
        assert isinstance(cm["data"][key], str), f"{key}: ConfigMap values must be strings"
    assert cm["data"]["LOYALTY_WEB_PORT"] == str(WEB_PORT)
    assert cm["data"]["LOYALTY_WEB_HOST"] == "0.0.0.0"
    assert "LOYALTY_API_TOKEN" in secret.get("stringData", secret.get("data", {}))
    assert "LOYALTY_API_TOKEN" not in cm["data"]


def test_every_variable_is_a_setting() -> None:
    """A misspelt variable is silently ignored by the service: fail here instead."""
    assert not unknown_variables(_one("ConfigMap")["data"]), "configmap.yaml"
    assert not unknown_variables(_secret_data(_one("Secret", "loyalty-secrets"))), "secret.yaml"
    for kind, name in (("StatefulSet", "loyalty-worker"), ("Deployment", "loyalty-lookup")):
        for c in _one(kind, name)["spec"]["template"]["spec"]["containers"]:
            assert not unknown_variables(e["name"] for e in c.get("env", [])), f"{kind}/{name}"


def test_worker_settings_validate(sts: dict[str, Any], container: dict[str, Any],
                                  tmp_path: Path) -> None:
    """The worker's environment (ConfigMap, Secret, env) is valid for app/settings.py, with the
    files it names read from the Secret mounted there: a production Kafka setup."""
    env = _pod_env(container, {"status.podIP": POD_IP})
    files = _secret_files(sts["spec"]["template"]["spec"], container)
    assert {env["KAFKA_SASL_PASSWORD_FILE"], env["KAFKA_SSL_CAFILE"]} <= set(files), \
        "a *_FILE / CAFILE path that no mounted Secret item provides"
    settings = _settings(env, files, tmp_path)
    assert settings.replication_factor == 3
    assert settings.min_insync_replicas == 2
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == "loyalty"
    password = _secret_data(_one("Secret", KAFKA_SECRET))["password"]
    assert settings.kafka_sasl_password.get_secret_value() == password.strip()
    assert settings.kafka_tls and settings.kafka_ssl_cafile
    assert settings.canonical_url == f"http://{POD_IP}:{WEB_PORT}"


def test_advertised_url_from_the_pod_ip(container: dict[str, Any]) -> None:
    """$(POD_IP) expands only if POD_IP is defined earlier in the env list."""
    env = container["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    pod_ip = env[names.index("POD_IP")]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    url = env[names.index("LOYALTY_ADVERTISED_URL")]["value"]
    assert url == f"http://$(POD_IP):{WEB_PORT}"
    assert names.index("POD_IP") < names.index("LOYALTY_ADVERTISED_URL")
    for i, item in enumerate(env):  # every $(VAR) refers to an earlier entry
        for ref in _REF.findall(item.get("value", "")):
            assert ref in names[:i], f"{item['name']}: $({ref}) is not defined before it"
    assert urlsplit(url.replace("$(POD_IP)", POD_IP)).port in {p["containerPort"] for p in
                                                               container["ports"]}


def test_kafka_secret_mounted_read_only(sts: dict[str, Any], container: dict[str, Any]) -> None:
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == KAFKA_DIR]
    assert mount.get("readOnly") is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == KAFKA_SECRET
    assert {i["path"] for i in secret["items"]} == {"ca.pem", "password"}
    data = _secret_data(_one("Secret", KAFKA_SECRET))
    assert {i["key"] for i in secret["items"]} <= set(data)
    assert "REPLACE-ME" in data["password"] and "REPLACE-ME" in data["ca.pem"], \
        "secret.yaml ships placeholders only"
    assert secret.get("defaultMode", 0o644) & 0o007 == 0, "Kafka credentials world-readable"
    # Not in the environment of any pod (envFrom would expose them to every process).
    for _, doc in _docs():
        if doc["kind"] in ("StatefulSet", "Deployment"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                refs = {r.get("secretRef", {}).get("name") for r in c.get("envFrom", [])}
                assert KAFKA_SECRET not in refs


def test_lookup_settings_validate_without_kafka_credentials() -> None:
    """The lookup server loads the same ConfigMap but no Kafka credentials: the Kafka
    security settings must be neutralised, or it would not start (it validates every setting)."""
    dep = _one("Deployment", "loyalty-lookup")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert not _secret_files(pod, container), "the lookup server mounts a Secret it does not need"
    env = _pod_env(container, {})
    assert not [v for v in env.values() if v.startswith(KAFKA_DIR)]
    settings = Settings.from_env(env)
    assert settings.lookup_port == 6068
    assert settings.kafka_security_protocol == "PLAINTEXT"


def test_image_is_pinned_and_runs_the_worker(container: dict[str, Any]) -> None:
    image = container["image"]
    assert ":" in image and not image.endswith(":latest")
    assert container.get("args", container.get("command")) == ["worker"]


# ------------------------------------------------------------------ Services and PDB


def test_services(sts: dict[str, Any]) -> None:
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    services = [d for _, d in _docs() if d["kind"] == "Service"
                and d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    api = [s for s in services if s["spec"].get("clusterIP") != "None"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    assert len(api) == 1 and len(headless) == 1
    assert api[0]["spec"].get("type", "ClusterIP") == "ClusterIP"
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        ports = svc["spec"]["ports"]
        assert [p["port"] for p in ports] == [WEB_PORT]
        container_ports = sts["spec"]["template"]["spec"]["containers"][0]["ports"]
        named = {p["name"]: p["containerPort"] for p in container_ports}
        target = ports[0].get("targetPort", WEB_PORT)
        assert named.get(target, target) == WEB_PORT


def test_lookup_deployment_and_service() -> None:
    dep = _one("Deployment", "loyalty-lookup")
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["lookup"]
    assert {"name": "LOYALTY_LOOKUP_PORT", "value": "6068"} in container["env"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 6068}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    svc = _one("Service", "loyalty-lookup")
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(6068, "lookup")]


def test_pdb_selects_the_workers(sts: dict[str, Any]) -> None:
    pdb = _one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


# ------------------------------------------------------------------ external validators


def test_manifests_match_the_kubernetes_openapi_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip(f"kubernetes-validate not installed ({INSTALL_HINT}): structural checks only")
    version = kubernetes_validate.latest_version()
    for path, doc in _docs():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - failure path
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_kustomize_build_renders_every_resource() -> None:
    kustomize = find_tool("kustomize")
    if kustomize is None:
        pytest.skip("kustomize not on PATH: kustomization.yaml checked structurally only")
    res = run([kustomize, "build", str(K8S)])
    assert res.returncode == 0, res.stderr
    rendered = [d for d in yaml.safe_load_all(res.stdout) if d]
    assert {d["kind"] for d in rendered} == EXPECTED_KINDS
    for doc in rendered:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "loyalty-stream"
