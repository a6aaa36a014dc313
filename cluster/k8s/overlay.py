"""An overlay rendered offline (`kubectl kustomize`) and every check run on the render."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import yaml

from cluster.k8s.admission import check_kuberay_rules
from cluster.k8s.core_schema import check_core_schema
from cluster.k8s.crds import check_ray_schema, crd_schemas
from cluster.k8s.manifest import RAY_KINDS, Problems
from cluster.k8s.rayjobs import check_stages
from cluster.k8s.rayservice import check_serve
from cluster.k8s.references import check_references
from cluster.k8s.security import check_pod_security, check_read_only_serving, check_redis


class RenderError(RuntimeError):
    """`kubectl kustomize` failed (its message says why)."""


def render(overlay: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k <overlay>` would send, rendered offline."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl is not installed (kubectl kustomize renders the overlays)")
    command = [kubectl, "kustomize", str(overlay)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate(objects: list[dict[str, Any]], crd_dir: str | os.PathLike[str] | None,
             build_app: bool = False) -> Problems:
    """Every check on a render; without `crd_dir` the Ray resources skip the CRD schema check."""
    problems: Problems = []
    schemas = crd_schemas(crd_dir) if crd_dir else {}
    for obj in objects:
        if obj.get("kind") in RAY_KINDS:
            problems += check_ray_schema(obj, schemas) if schemas else []
            problems += check_kuberay_rules(obj)
        problems += check_core_schema(obj)
    problems += check_references(objects)
    problems += check_stages(objects)
    problems += check_serve(objects, build_app=build_app)
    problems += check_pod_security(objects) + check_read_only_serving(objects) + check_redis(objects)
    return problems
