"""Reading a rendered manifest: object names, the pod templates an object creates, the Ray cluster
inside a RayJob or RayService, and Kubernetes quantities."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

RAY_KINDS = ("RayJob", "RayService", "RayCluster")
GPU = "nvidia.com/gpu"
Problems = list[str]
Objects = list[dict[str, Any]]


def name_of(obj: dict[str, Any]) -> str:
    """`Kind/name`, the prefix of every problem about the object."""
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def dotted(parts: Any) -> str:
    """A path into a document (`spec.template.0`), `(top)` for the document itself."""
    return ".".join(str(p) for p in parts) or "(top)"


def find(objects: Objects, kind: str, name: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if o.get("kind") == kind and o["metadata"].get("name") == name), None)


def cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a Ray resource: a RayJob's rayClusterSpec, a RayService's rayClusterConfig."""
    spec = obj.get("spec") or {}
    inner = {"RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}
    return inner.get(obj.get("kind"), spec) or {}


def ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray container (the first) of the head, then of each worker group."""
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    found = [((g.get("template") or {}).get("spec") or {}).get("containers") or [] for g in groups]
    return [containers[0] for containers in found if containers]


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(where, pod spec, pod metadata) of every pod template the object creates."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        yield "", spec, obj.get("metadata")
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = spec.get("template") or {}
        yield "", template.get("spec") or {}, template.get("metadata")
    elif kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        yield "", template.get("spec") or {}, template.get("metadata")
    elif kind in RAY_KINDS:
        cluster = cluster_spec(obj)
        head = (cluster.get("headGroupSpec") or {}).get("template") or {}
        yield "headGroupSpec.template: ", head.get("spec") or {}, head.get("metadata")
        for group in cluster.get("workerGroupSpecs") or []:
            template = group.get("template") or {}
            yield f"worker group {group.get('groupName')}: ", template.get("spec") or {}, template.get("metadata")
        if kind == "RayJob" and spec.get("submitterPodTemplate"):
            template = spec["submitterPodTemplate"]
            yield "submitterPodTemplate: ", template.get("spec") or {}, template.get("metadata")


def strings(node: Any) -> Iterator[str]:
    """Every string inside a nested document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def quantity(text: Any) -> float:
    """A Kubernetes quantity (`500m`, `4Gi`, `2`) as a number."""
    text = str(text)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in sorted(suffixes.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def version_at_least(text: Any, minimum: tuple[int, ...]) -> bool:
    numbers = re.findall(r"\d+", str(text or ""))
    return bool(numbers) and tuple(int(n) for n in numbers[: len(minimum)]) >= minimum
