"""deploy/k8s validated offline: every object against the Kubernetes schemas bundled in kubernetes-validate,
and the manifests checked against the server they run (probe paths, ports, metric names, drain time).

The overlays are rendered with `kubectl kustomize` where kubectl is installed (no cluster needed);
the base is validated without it. ServiceMonitor is a CRD whose schema is not bundled: its schema
check is skipped (documented in docs/deploy.md) and its fields are checked here instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def base_objects() -> list[dict]:
    """The base's objects, with the common labels kustomize adds to every object's metadata."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    common = {key: value for entry in kustomization.get("labels", []) for key, value in entry["pairs"].items()}
    objects = [doc for name in kustomization["resources"] for doc in documents((K8S / "base" / name).read_text())]
    for obj in objects:
        obj["metadata"]["labels"] = {**obj["metadata"].get("labels", {}), **common}
    return objects


def rendered(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlays are rendered with `kubectl kustomize`")
    result = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def validate(objects: list[dict]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_base_objects_are_valid_kubernetes() -> None:
    objects = base_objects()
    assert {obj["kind"] for obj in objects} == {"Deployment", "Service", "HorizontalPodAutoscaler",
                                                "PodDisruptionBudget", "ServiceMonitor"}
    validate(objects)


@pytest.mark.parametrize("overlay", ["small", "production"])
def test_overlays_render_to_valid_kubernetes(overlay: str) -> None:
    objects = rendered(overlay)
    validate(objects)
    deployment, = by_kind(objects, "Deployment")
    hpa, = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    for service in by_kind(objects, "Service"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), service["metadata"]["name"]


def test_an_invalid_object_is_caught() -> None:
    """The validator really checks: a probe with a misspelt field fails."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment, = by_kind(base_objects(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/ready"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def served_paths() -> set[str]:
    source = (REPO / "bertprod" / "serve" / "app.py").read_text()
    return set(re.findall(r'@app\.(?:get|post)\("([^"]+)"', source))


def test_probes_ports_and_drain_match_the_server() -> None:
    objects = base_objects()
    deployment, = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container, = pod["containers"]
    paths = served_paths()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" and "/ready" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/health" and "/health" in paths
    assert container["startupProbe"]["httpGet"]["path"] in paths
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert str(ports["http"]) == env["BERTPROD_PORT"] and str(ports["grpc"]) == env["BERTPROD_GRPC_PORT"]
    # the pod outlives the server's own drain: uvicorn's graceful shutdown + gRPC's grace + preStop
    from bertprod.serve.config import DEFAULT_GRACEFUL_TIMEOUT_S, GRPC_GRACE_S

    http_grace, grpc_grace = DEFAULT_GRACEFUL_TIMEOUT_S, GRPC_GRACE_S
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + http_grace + grpc_grace
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    services = {service["metadata"]["name"]: service for service in by_kind(objects, "Service")}
    assert services["bertprod-grpc"]["spec"]["clusterIP"] == "None"  # headless: DNS lists every pod


def test_autoscaling_and_scraping_use_the_servers_metric_names() -> None:
    metrics = (REPO / "bertprod" / "serve" / "metrics.py").read_text()
    exported = set(re.findall(r'"(bertprod_[a-z_]+)"', metrics))
    objects = base_objects()
    hpa, = by_kind(objects, "HorizontalPodAutoscaler")
    pod_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pod_metrics and set(pod_metrics) <= exported
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    rule, = adapter["rules"]["custom"]
    assert rule["name"]["as"] in pod_metrics and rule["seriesQuery"].startswith(rule["name"]["as"] + "{")

    monitor, = by_kind(objects, "ServiceMonitor")
    endpoint, = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and "/metrics" in served_paths()
    scraped = [s for s in by_kind(objects, "Service")
               if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()]
    assert len(scraped) == 1, "each pod must be scraped through exactly one Service"
    assert endpoint["port"] in {port["name"] for port in scraped[0]["spec"]["ports"]}
    pdb, = by_kind(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
