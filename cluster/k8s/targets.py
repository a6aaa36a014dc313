"""What a stage's config points at exists in the pod: absolute paths lie on mounted volumes (the
storage every node shares), in-cluster URLs name a Service of the render and one of its ports."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from cluster.k8s.manifest import Objects, Problems, strings

DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379}


def paths_on_volumes(dumped: Any, cluster: dict[str, Any]) -> Problems:
    """Every absolute path in `dumped` (a config as JSON) lies on a volume of every Ray container, one
    that outlives the pod (an emptyDir, such as /tmp, is the pod's own scratch space)."""
    problems = []
    for group in [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]:
        pod = (group.get("template") or {}).get("spec") or {}
        if not pod.get("containers"):
            continue
        container = pod["containers"][0]
        scratch = {v.get("name") for v in pod.get("volumes") or [] if "emptyDir" in v}
        mounts = [m.get("mountPath", "").rstrip("/") + "/" for m in container.get("volumeMounts") or []
                  if m.get("name") not in scratch]
        for value in strings(dumped):
            if value.startswith("/") and not any((value.rstrip("/") + "/").startswith(m) for m in mounts):
                problems.append(
                    f"{value}: not on a volume mounted in container {container.get('name')} (shared storage)")
    return sorted(set(problems))


def urls_name_services(values: list[str], objects: Objects) -> Problems:
    """In-namespace URLs (bare service names) must name a Service of the render, or one KubeRay makes."""
    ports = _service_ports(objects)
    problems = []
    for value in values:
        parts = urlsplit(value) if "://" in value else None
        if parts is None or not parts.hostname:
            continue
        if "." in parts.hostname.removesuffix(".svc.cluster.local").removesuffix(".svc"):
            continue  # another namespace or outside the cluster
        host = parts.hostname.split(".")[0]
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        if host not in ports:
            problems.append(f"{parts.scheme}://{host}: no Service {host!r} in the render")
        elif port not in ports[host]:
            problems.append(f"{parts.scheme}://{host}:{port}: Service {host!r} has ports {sorted(ports[host])}")
    return problems


def _service_ports(objects: Objects) -> dict[str, set[int]]:
    """Service name -> its ports, with the `<name>-serve-svc` KubeRay makes for each RayService."""
    ports: dict[str, set[int]] = {}
    for obj in objects:
        if obj.get("kind") == "Service":
            ports[obj["metadata"]["name"]] = {p.get("port") for p in obj["spec"].get("ports") or []}
        if obj.get("kind") == "RayService":
            serve_config = yaml.safe_load(obj["spec"].get("serveConfigV2") or "{}") or {}
            ports[f"{obj['metadata']['name']}-serve-svc"] = {(serve_config.get("http_options") or {}).get("port", 8000)}
    return ports
