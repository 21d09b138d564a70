"""The Kubernetes manifests render, pass the Kubernetes schemas, and agree with the code;
the check catches a broken manifest."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_check", ROOT / "deploy" / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_manifests_render_and_validate() -> None:
    check = _check()
    docs = check.render()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "PodDisruptionBudget",
        "Secret",
        "Service",
    ]
    assert check.problems(docs) == []


def test_the_check_catches_broken_manifests() -> None:
    check = _check()
    docs = check.render()

    typo = copy.deepcopy(docs)
    dep = _find(typo, "Deployment", "neuralops-registry")
    dep["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    assert any("readinesProbe" in p for p in check.problems(typo))

    moved = copy.deepcopy(docs)
    _find(moved, "ConfigMap", "neuralops-config")["data"]["NEURALOPS_INSIGHT_ADDR"] = "x:9001"
    found = check.problems(moved)
    assert any("Deployment/neuralops-insight: grpc port 8001 != 9001" in p for p in found)

    no_secret = [d for d in docs if d["metadata"]["name"] != "neuralops-tokens"]
    assert any("no Secret/neuralops-tokens" in p for p in check.problems(no_secret))

    no_pdb = [d for d in docs if d["kind"] != "PodDisruptionBudget"]
    assert any("no PodDisruptionBudget" in p for p in check.problems(no_pdb))
