"""Renders of every overlay (kubectl kustomize, offline) and the KubeRay CRD schemas, once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from cluster import k8s

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "gpu", "local.example")
# KubeRay v1.7.0's ray-operator/config/crd/bases/ray.io_{rayclusters,rayjobs,rayservices}.yaml.
CRD_DIRS = (os.environ.get("SOCIALALIGN_KUBERAY_CRDS", ""), str(REPO / ".cache" / "kuberay-crds"),
            "/work/shared/schemas/kuberay")


@pytest.fixture(scope="session")
def renders() -> dict[str, list[dict[str, Any]]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the overlays are rendered with `kubectl kustomize`")
    return {name: k8s.render(REPO / "k8s" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    for candidate in CRD_DIRS:
        if candidate and all((Path(candidate) / name).is_file() for name in k8s.CRD_FILES.values()):
            return Path(candidate)
    pytest.skip("KubeRay CRDs not found: put KubeRay v1.7.0's ray.io_*.yaml CRDs in .cache/kuberay-crds "
                "or point SOCIALALIGN_KUBERAY_CRDS at them")


@pytest.fixture(scope="session")
def crd_schemas(crd_dir: Path) -> dict[str, dict[str, Any]]:
    return k8s.crd_schemas(crd_dir)
