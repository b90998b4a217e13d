"""deploy/k8s manifests: structure, probes, security, storage; schema-validated when
kubernetes-validate is installed, rendered with kustomize when it is on PATH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import DEPLOY, INSTALL_HINT, find_tool, run

K8S = DEPLOY / "k8s"
NAMESPACE = "loyalty"
WEB_PORT = 6066
CLUSTER_SCOPED = {"Namespace"}
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
    secret = _one("Secret")
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
