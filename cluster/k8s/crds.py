"""Ray resources against KubeRay's CRD schemas: where the CRD files are found, their
openAPIV3Schema read as JSON Schema with the API server's semantics, and the check itself."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.k8s.manifest import Problems, dotted, name_of

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
# Where KubeRay v1.7's ray.io_*.yaml CRDs are looked for, after --crds: $SOCIALALIGN_KUBERAY_CRDS,
# the repo's .cache/kuberay-crds, then ../shared/schemas/kuberay beside the checkout.
CRD_ENV = "SOCIALALIGN_KUBERAY_CRDS"
CRD_DIRS = (REPO / ".cache" / "kuberay-crds", REPO.parent / "shared" / "schemas" / "kuberay")


def has_crds(crd_dir: str | os.PathLike[str]) -> bool:
    return all((Path(crd_dir) / name).is_file() for name in CRD_FILES.values())


def crd_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where the KubeRay CRDs are looked for: $SOCIALALIGN_KUBERAY_CRDS alone when it is set, else CRD_DIRS."""
    environ = os.environ if environ is None else environ
    return [Path(environ[CRD_ENV])] if environ.get(CRD_ENV) else list(CRD_DIRS)


def find_crds(environ: Mapping[str, str] | None = None) -> Path | None:
    """The first of `crd_candidates` that holds all three CRD files."""
    return next((c for c in crd_candidates(environ) if has_crds(c)), None)


def crd_schemas(crd_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """kind -> JSON Schema of ray.io/v1 from the CRD files in `crd_dir` (KubeRay's config/crd/bases)."""
    return _crd_schemas(str(Path(crd_dir).resolve()))


@functools.lru_cache(maxsize=4)
def _crd_schemas(crd_dir: str) -> dict[str, dict[str, Any]]:
    schemas = {}
    for kind, name in CRD_FILES.items():
        with open(Path(crd_dir) / name, encoding="utf-8") as handle:
            crd = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schemas[kind] = openapi_to_json_schema(v1["schema"]["openAPIV3Schema"])
    return schemas


def openapi_to_json_schema(node: Any) -> Any:
    """A structural openAPIV3Schema as JSON Schema, with the API server's semantics:
    unknown fields are errors unless `x-kubernetes-preserve-unknown-fields`; int-or-string takes
    either; `nullable` allows null; an embedded resource may carry apiVersion/kind/metadata."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_json_schema(value) for key, value in node.items()
           if not key.startswith("x-kubernetes-") and key not in ("description", "format")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for name in ("apiVersion", "kind"):
            props.setdefault(name, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    elif out.get("type") in ("object", ["object", "null"]) and "properties" in out:
        out.setdefault("additionalProperties", False)
    out.pop("nullable", None)
    return out


def check_ray_schema(obj: dict[str, Any], schemas: Mapping[str, dict[str, Any]]) -> Problems:
    """A Ray resource against its CRD schema, unknown fields as errors (as `kubectl apply`'s strict
    field validation does)."""
    from jsonschema import Draft7Validator

    schema = schemas.get(obj.get("kind", ""))
    if schema is None or obj.get("apiVersion") != "ray.io/v1":
        return [f"{name_of(obj)}: no KubeRay schema for {obj.get('apiVersion')} {obj.get('kind')} (expected ray.io/v1)"]
    errors = sorted(Draft7Validator(schema).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{name_of(obj)}: {dotted(e.absolute_path)}: {e.message}" for e in errors]
