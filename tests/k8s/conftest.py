"""Renders of every overlay (kubectl kustomize, offline) and the KubeRay CRD schemas, once per session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from cluster import k8s

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "gpu", "local.example")


@pytest.fixture(scope="session")
def renders() -> dict[str, list[dict[str, Any]]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlays are rendered with `kubectl kustomize`")
    return {name: k8s.render(REPO / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """KubeRay v1.7.0's ray-operator/config/crd/bases/ray.io_*.yaml, where `python -m cluster.k8s` finds
    them: $SOCIALALIGN_KUBERAY_CRDS, else .cache/kuberay-crds or ../shared/schemas/kuberay."""
    found = k8s.find_crds()
    if found is None:
        where = " or ".join(str(d) for d in k8s.crd_candidates())
        pytest.skip(f"KubeRay CRDs not found in {where} (set SOCIALALIGN_KUBERAY_CRDS)")
    return found


@pytest.fixture(scope="session")
def crd_schemas(crd_dir: Path) -> dict[str, dict[str, Any]]:
    return k8s.crd_schemas(crd_dir)
