"""What KubeRay's admission (ValidateRayJobSpec & co.) refuses that a CRD schema cannot say."""

from __future__ import annotations

import re
from typing import Any

import yaml

from cluster.k8s.manifest import Problems, cluster_spec, name_of, version_at_least

MAX_RAY_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # KubeRay: 63 - len("-serve-svc") [- 6]
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RUNTIME_ENV_KEYS = {"env_vars", "working_dir", "py_modules", "pip", "uv", "conda", "container", "image_uri",
                    "excludes", "config", "nsight", "py_executable", "java_jars"}


def check_kuberay_rules(obj: dict[str, Any]) -> Problems:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    cluster = cluster_spec(obj) or {}
    problems = _name_rules(kind, (obj.get("metadata") or {}).get("name", "")) + _cluster_rules(cluster)
    if kind == "RayJob":
        problems += _rayjob_rules(spec)
    if kind == "RayService":
        problems += _rayservice_rules(spec)
    return [f"{name_of(obj)}: {p}" for p in problems]


def _name_rules(kind: str | None, name: str) -> Problems:
    longest = MAX_RAY_NAME.get(kind, 63)
    if not DNS1035.match(name) or len(name) > longest:
        return [f"name {name!r}: KubeRay needs a DNS-1035 label of at most {longest} characters"]
    return []


def _cluster_rules(cluster: dict[str, Any]) -> Problems:
    problems = []
    head = cluster.get("headGroupSpec") or {}
    if not ((head.get("template") or {}).get("spec") or {}).get("containers"):
        problems.append("headGroupSpec: the head pod template has no container")
    problems += _worker_group_rules(cluster)
    for gname, group in [("head", head), *[(g.get("groupName"), g) for g in cluster.get("workerGroupSpecs") or []]]:
        params = group.get("rayStartParams") or {}
        if "labels" in params:
            problems.append(f"{gname}: rayStartParams.labels is not supported; use the group's labels field")
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            problems.append(f"{gname}: Ray resources set both in rayStartParams and in resources")
    token_auth = (cluster.get("authOptions") or {}).get("mode") == "token"
    if token_auth and not version_at_least(cluster.get("rayVersion"), (2, 52)):
        problems.append(f"authOptions.mode token needs rayVersion >= 2.52.0 (got {cluster.get('rayVersion')!r})")
    return problems


def _worker_group_rules(cluster: dict[str, Any]) -> Problems:
    problems = []
    autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
    seen = set()
    for group in cluster.get("workerGroupSpecs") or []:
        gname = group.get("groupName")
        if gname in seen:
            problems.append(f"workerGroupSpecs: group name {gname!r} is used twice")
        seen.add(gname)
        low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if not autoscaling and (low is None or high is None):
            problems.append(f"worker group {gname}: set minReplicas and maxReplicas (autoscaling is off)")
        elif isinstance(low, int) and isinstance(high, int):
            wanted = replicas if isinstance(replicas, int) else low
            if not low <= wanted <= high:
                problems.append(f"worker group {gname}: needs minReplicas <= replicas <= maxReplicas")
    return problems


def _rayjob_rules(spec: dict[str, Any]) -> Problems:
    problems = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    if spec.get("suspend") and not shutdown:
        problems.append("suspend needs shutdownAfterJobFinishes: true")
    ttl = spec.get("ttlSecondsAfterFinished") or 0
    if isinstance(ttl, int) and (ttl < 0 or (ttl > 0 and not shutdown)):
        problems.append("ttlSecondsAfterFinished must be >= 0 and needs shutdownAfterJobFinishes: true")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if isinstance(spec.get(field), int) and spec[field] <= 0:
            problems.append(f"{field} must be positive")
    if not spec.get("rayClusterSpec") and not spec.get("clusterSelector"):
        problems.append("one of rayClusterSpec or clusterSelector must be set")
    if not str(spec.get("entrypoint") or "").strip():
        problems.append("entrypoint is empty")
    return problems + _runtime_env_rules(spec.get("runtimeEnvYAML"))


def _runtime_env_rules(text: str | None) -> Problems:
    try:
        env = yaml.safe_load(text or "{}")
    except yaml.YAMLError as error:
        return [f"runtimeEnvYAML: invalid YAML ({error})"]
    if not isinstance(env, dict):
        return ["runtimeEnvYAML: expected a mapping"]
    if unknown := sorted(set(env) - RUNTIME_ENV_KEYS):
        return [f"runtimeEnvYAML: unknown runtime env fields {unknown}"]
    return []


def _rayservice_rules(spec: dict[str, Any]) -> Problems:
    try:
        if not isinstance(yaml.safe_load(spec.get("serveConfigV2") or ""), dict):
            return ["serveConfigV2: expected a YAML mapping (a Serve config)"]
    except yaml.YAMLError as error:
        return [f"serveConfigV2: invalid YAML ({error})"]
    return []
