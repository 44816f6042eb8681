"""The deployment files: cluster/kuberay.yaml against KubeRay's RayCluster schema, and the
Dockerfile and docker-compose.yml against what the engine reads.

The schema is KubeRay's CRD (ray-operator/config/crd/bases/ray.io_rayclusters.yaml, v1,
from ray-project/kuberay at v1.7.0-rc.0-5-gfeeaf72), its openAPIV3Schema vendored as
cluster/schemas/raycluster-v1.schema.json.gz. Kubernetes prunes fields a structural
schema does not name instead of refusing them, so a misspelt field would vanish without
a word: the walk below refuses every such field."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from flashtx.engine.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"


def _all_documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))


def _documents() -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind (of a kind with several, the first)."""
    found: dict[str, dict[str, Any]] = {}
    for doc in _all_documents():
        found.setdefault(doc["kind"], doc)
    return found


def _schema() -> dict[str, Any]:
    with gzip.open(CLUSTER / "schemas" / "raycluster-v1.schema.json.gz") as file:
        schema: dict[str, Any] = json.loads(file.read())
    return schema


def _pruned(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of `value` that a structural schema does not keep (Kubernetes prunes them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                found += _pruned(item, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _pruned(item, extra, f"{path}.{key}")
            elif properties is not None and not extra:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += _pruned(item, schema["items"], f"{path}[{i}]")
    return found


def test_the_raycluster_is_valid_and_loses_no_field() -> None:
    cluster = _documents()["RayCluster"]
    schema = _schema()
    jsonschema.Draft7Validator(schema).validate(cluster)
    assert _pruned(cluster, schema) == []
    misspelt = {**cluster, "spec": {**cluster["spec"], "enableInTreeAutoscalling": True}}
    assert _pruned(misspelt, schema) == [".spec.enableInTreeAutoscalling"]  # the walk sees it


def test_the_raycluster_runs_the_engine_as_flashtx_expects() -> None:
    cluster = _documents()["RayCluster"]
    spec = cluster["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    # The head runs its own command: KubeRay must not generate `ray start` over it.
    assert "command" in head
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    env = {e["name"]: e.get("value") for e in head["env"]}
    # Every FLASHTX_ variable is one the engine knows (an unknown one fails its start).
    load_config(environ={k: v for k, v in env.items() if k.startswith("FLASHTX_") and v})
    resource = env["FLASHTX_ACTOR_RESOURCE"]
    for group in spec["workerGroupSpecs"]:
        offered = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert offered.get(resource, 0) > 0  # actors asking for it fit here
        worker = group["template"]["spec"]["containers"][0]
        # Kubernetes' gRPC probe speaks no TLS: the probe is `flashtx health`, which
        # speaks TLS with the files this container's settings name.
        probe = worker["readinessProbe"]["exec"]["command"]
        assert probe[:2] == ["flashtx", "health"] and "127.0.0.1:50051" in probe
        worker_env = {e["name"]: e.get("value") for e in worker["env"]}
        assert _tls_files(worker_env) == _tls_files(env), "the head's files, mounted here"
        assert "livenessProbe" in worker
    assert float(env["FLASHTX_GATEWAY_CPUS"]) > 0  # the autoscaler is asked for nodes
    for container in (head, *(g["template"]["spec"]["containers"][0]
                              for g in spec["workerGroupSpecs"])):
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]


def _tls_files(env: dict[str, str | None]) -> tuple[str | None, ...]:
    return tuple(env.get(f"FLASHTX_TLS_{name}_FILE") for name in ("CERT", "KEY", "CA"))


def test_grpc_speaks_tls_and_the_dashboard_is_not_exposed() -> None:
    cluster = _documents()["RayCluster"]
    head_group = cluster["spec"]["headGroupSpec"]
    head = head_group["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert all(_tls_files(env)), "gateways speak TLS"
    # Every TLS file lies in a mounted Secret, on the head and on every worker.
    for pod in (head_group, *cluster["spec"]["workerGroupSpecs"]):
        spec = pod["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", [])
                   if "secret" in v}
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        for path in _tls_files(env):
            assert path is not None
            folder = path.rsplit("/", 1)[0]
            assert secrets.get(mounts.get(folder, "")) == "flashtx-tls", (path, mounts)
    # Ray's dashboard and Jobs API (no authentication) listen on the pod's loopback only.
    assert head_group["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    command = " ".join(head.get("args", []))
    assert "--dashboard-host=127.0.0.1" in command and "0.0.0.0" not in command
    assert 8265 not in [p["containerPort"] for p in head["ports"]]


def _pod_labels(template: dict[str, Any]) -> dict[str, str]:
    """A pod's labels: its template's and those KubeRay puts on every pod of the cluster."""
    return {**template["metadata"]["labels"], "ray.io/cluster": "flashtx"}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_grpc_services_and_the_budget_select_the_engine_pods_only() -> None:
    """The head serves no gRPC: a Service that selected it sent a share of the
    connections where nothing answers."""
    spec = _documents()["RayCluster"]["spec"]
    head = _pod_labels(spec["headGroupSpec"]["template"])
    engines = [_pod_labels(g["template"]) for g in spec["workerGroupSpecs"]]
    services = {d["metadata"]["name"]: d for d in _all_documents() if d["kind"] == "Service"}
    assert set(services) == {"flashtx-grpc", "flashtx-grpc-headless"}
    for service in services.values():
        selector = service["spec"]["selector"]
        assert not _selects(selector, head), service["metadata"]["name"]
        assert all(_selects(selector, labels) for labels in engines)
        assert [p["targetPort"] for p in service["spec"]["ports"]] == [50051]
    # DNS answers each ready engine pod: clients balance calls over them (round_robin).
    assert services["flashtx-grpc-headless"]["spec"]["clusterIP"] == "None"
    budget = _documents()["PodDisruptionBudget"]
    assert budget["apiVersion"] == "policy/v1" and budget["spec"]["maxUnavailable"] == 1
    selector = budget["spec"]["selector"]["matchLabels"]
    assert not _selects(selector, head) and all(_selects(selector, e) for e in engines)
    assert _documents()["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_an_engine_pod_drains_its_gateway_before_it_stops() -> None:
    """preStop writes the file the gateways watch (gateway_drain_file, set where the
    engine's settings are read: the head); the pod's grace period outlasts the drain."""
    spec = _documents()["RayCluster"]["spec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    config = load_config(environ={e["name"]: e["value"] for e in head["env"]
                                  if e["name"].startswith("FLASHTX_") and "value" in e})
    assert config.gateway_drain_file and config.gateway_drain_delay_s > 0
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        hook = " ".join(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
        assert f"touch {config.gateway_drain_file}" in hook
        waits_s = float(re.search(r"sleep (\d+)", hook).group(1))  # type: ignore[union-attr]
        # The gateway sees the file within a second, answers NOT_SERVING for the delay,
        # then gives calls in flight up to 5 s (Topology.stop's grace).
        assert waits_s >= 1 + config.gateway_drain_delay_s + 5
        assert pod["terminationGracePeriodSeconds"] > waits_s


def test_the_image_is_pinned_non_root_and_checks_its_health() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert len(bases) == 2 and all(re.search(r":\d+\.\d+\.\d+-", b) for b in bases)  # pinned
    # The non-root user, by its numeric id (hadolint DL3066: names may not resolve).
    uid = re.search(r"useradd --uid (\d+) --gid flashtx", dockerfile)
    assert uid is not None and uid.group(1) != "0"
    assert re.search(rf"^USER {uid.group(1)}:{uid.group(1)}$", dockerfile, re.MULTILINE)
    assert re.search(r'^HEALTHCHECK .*\n?.*"flashtx", "health"', dockerfile, re.MULTILINE)
    # trace_exporter = "otlp" works in the image (the exporter is installed).
    installed = re.search(r"pip install --no-cache-dir \./clients/python '\.\[([a-z,]+)\]'",
                          dockerfile)
    assert installed is not None and "otlp" in installed.group(1).split(",")


def test_the_compose_file_sets_only_known_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["flashtx"]["environment"]
    config = load_config(environ=env)
    assert config.log_format == "json"
    with pytest.raises(Exception, match="FLASHTX_LOG_FORMT"):
        load_config(environ={**env, "FLASHTX_LOG_FORMT": "json"})
