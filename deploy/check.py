"""Render and check the Kubernetes manifests in deploy/kubernetes without a cluster.

Every document is checked against the Kubernetes OpenAPI schemas that ship inside the
``kubernetes-validate`` package (strict: unknown fields fail), then against each other
and against the code: the ConfigMap must be settings ``neuralops`` reads, each
Deployment's gRPC port and health probes must match the address in the ConfigMap,
every Secret/ConfigMap referenced must exist, every pod must request resources, and
every Deployment must have a PodDisruptionBudget. ``make deploy-check`` runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent / "kubernetes"
SERVICES = {
    "registry": "neuralops.registry.v1.RegistryService",
    "insight": "neuralops.insight.v1.InsightService",
    "runhistory": "neuralops.runhistory.v1.RunHistoryService",
}


def render(directory: Path = HERE) -> list[dict[str, Any]]:
    """Every document of every manifest, in file order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def problems(docs: list[dict[str, Any]]) -> list[str]:
    from neuralops.servers.runtime.config import Config

    found: list[str] = []
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{what}: {exc.message} at {'.'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            found.append(f"{what}: no schema ({exc})")
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmap = by_kind.get("ConfigMap", {}).get("neuralops-config")
    if configmap is None:
        return [*found, "ConfigMap/neuralops-config is missing"]
    data = dict(configmap["data"])
    # Token files live in the Secrets; here only the shape of the other settings counts.
    settings = {k: v for k, v in data.items() if not k.endswith("_TOKENS")}
    config = Config.from_env(settings)
    unknown = [k for k in data if not (k.startswith("NEURALOPS_") or k == "PROM_URL")]
    found += [f"ConfigMap: {k} is not a NeuralOps setting" for k in unknown]
    pdb_selectors = [
        p["spec"]["selector"]["matchLabels"]
        for p in by_kind.get("PodDisruptionBudget", {}).values()
    ]
    for service, full_name in SERVICES.items():
        name = f"neuralops-{service}"
        dep = by_kind.get("Deployment", {}).get(name)
        if dep is None:
            found.append(f"Deployment/{name} is missing")
            continue
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = config.listen_port(service)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if ports.get("grpc") != port:
            found.append(
                f"Deployment/{name}: grpc port {ports.get('grpc')} != {port} in the ConfigMap"
            )
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            grpc_probe = container.get(probe, {}).get("grpc")
            if not grpc_probe or grpc_probe.get("port") != port:
                found.append(f"Deployment/{name}: {probe} is not a gRPC probe on {port}")
        if container["readinessProbe"]["grpc"].get("service") != full_name:
            found.append(f"Deployment/{name}: readiness should check {full_name}")
        if not container.get("resources", {}).get("requests"):
            found.append(f"Deployment/{name}: no resource requests")
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if not any(sel.items() <= labels.items() for sel in pdb_selectors):
            found.append(f"Deployment/{name}: no PodDisruptionBudget selects it")
        svc = by_kind.get("Service", {}).get(name)
        if svc is None or port not in [p["port"] for p in svc["spec"]["ports"]]:
            found.append(f"Service/{name}: missing or not on port {port}")
    for doc in [*by_kind.get("Deployment", {}).values(), *by_kind.get("Job", {}).values()]:
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for src in container.get("envFrom", []):
                ref = src.get("configMapRef") or src.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in src else "Secret"
                if ref["name"] not in by_kind.get(kind, {}):
                    found.append(
                        f"{doc['kind']}/{doc['metadata']['name']}: no {kind}/{ref['name']}"
                    )
            if not container.get("resources", {}).get("requests"):
                found.append(f"{doc['kind']}/{doc['metadata']['name']}: no resource requests")
        for volume in pod.get("volumes", []):
            secret = volume.get("secret", {}).get("secretName")
            if secret and secret not in by_kind.get("Secret", {}):
                found.append(f"{doc['kind']}/{doc['metadata']['name']}: no Secret/{secret}")
    if "Job" not in by_kind:
        found.append("no migration Job")
    return found


def main(argv: list[str]) -> int:
    directory = Path(argv[1]) if len(argv) > 1 else HERE
    docs = render(directory)
    found = problems(docs)
    for line in found:
        print(f"deploy: {line}", file=sys.stderr)
    if not found:
        print(f"deploy: {len(docs)} Kubernetes resources in {directory.name}/ render and validate")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
