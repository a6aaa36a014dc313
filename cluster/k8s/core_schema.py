"""Core resources against the Kubernetes OpenAPI schemas (kubernetes-validate, strict); a Ray
resource by its pod templates, each checked as a Pod."""

from __future__ import annotations

from typing import Any

from cluster.k8s.manifest import RAY_KINDS, Problems, dotted, name_of, pod_templates

K8S_VERSION = "1.32"


def check_core_schema(obj: dict[str, Any], k8s_version: str = K8S_VERSION) -> Problems:
    import kubernetes_validate

    if obj.get("kind") in RAY_KINDS:
        pods = [(where, {"apiVersion": "v1", "kind": "Pod", "metadata": meta or {}, "spec": spec})
                for where, spec, meta in pod_templates(obj)]
    else:
        pods = [("", obj)]
    problems = []
    for where, resource in pods:
        try:
            kubernetes_validate.validate(resource, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(obj)}: {where}{dotted(error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{name_of(obj)}: {error.message}")
    return problems
