"""What keeps one compromised pod from becoming more: every pod template drops its privileges,
the pods that answer clients cannot write shared storage, and Redis asks for a password and
admits only the pods that carry its URL.

- `check_pod_security`: every container of every pod template (Deployments, StatefulSets, Jobs,
  each Ray group and the RayJob submitter) runs as non-root with privilege escalation off, all
  capabilities dropped, the runtime's seccomp profile and a read-only root filesystem (a pod
  template may keep a writable root only with the annotation WRITABLE_ROOT saying why); no pod
  shares the host's network, PIDs or IPC or mounts a host path. A RayJob names its submitter pod,
  since KubeRay's default one has no securityContext.
- `check_read_only_serving`: a RayService's pods mount every persistent volume read-only, so a
  compromised Serve pod plants no checkpoint or adapter for the training stages to load.
- `check_redis`: each Redis server takes its password (requirepass) from a Secret; every Redis URL
  a pod gets carries that password; a NetworkPolicy in front of it admits exactly the pods that get
  its URL (no empty selector, no other namespace, no address block).
"""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import urlsplit

from cluster.k8s.manifest import Objects, Problems, find, name_of, pod_templates
from cluster.k8s.pod_config import pod_environment, secret_value

WRITABLE_ROOT = "socialalign.io/writable-root-filesystem"
SECCOMP_PROFILES = ("RuntimeDefault", "Localhost")
PERSISTENT_VOLUMES = ("persistentVolumeClaim", "hostPath", "nfs", "csi", "iscsi", "cephfs", "glusterfs",
                      "azureFile", "ephemeral")

Template = tuple[dict[str, Any], str, dict[str, Any], dict[str, Any]]  # (object, where, pod spec, metadata)


def check_pod_security(objects: Objects) -> Problems:
    problems = []
    for obj in objects:
        prefix = f"{name_of(obj)}: "
        spec = obj.get("spec") or {}
        if obj.get("kind") == "RayJob" and spec.get("submissionMode", "K8sJobMode") == "K8sJobMode" \
                and not spec.get("submitterPodTemplate"):
            problems.append(f"{prefix}no submitterPodTemplate: KubeRay's default submitter pod runs without a "
                            "securityContext; name one that drops privileges")
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or {}
        autoscaler = (cluster.get("autoscalerOptions") or {}).get("securityContext")
        if cluster.get("enableInTreeAutoscaling") and not autoscaler:
            problems.append(f"{prefix}autoscalerOptions.securityContext: the autoscaler sidecar needs one too")
        for where, pod, meta in pod_templates(obj):
            problems += [f"{prefix}{where}{p}" for p in _pod_problems(pod, meta or {})]
    return problems


def _pod_problems(pod: dict[str, Any], meta: dict[str, Any]) -> Problems:
    problems = [f"{field}: the pod must not share the host's {what}"
                for field, what in (("hostNetwork", "network"), ("hostPID", "processes"), ("hostIPC", "IPC"))
                if pod.get(field)]
    problems += [f"volume {v.get('name')}: a hostPath gives the pod the node's files"
                 for v in pod.get("volumes") or [] if "hostPath" in v]
    context = pod.get("securityContext") or {}
    writable_ok = bool(str((meta.get("annotations") or {}).get(WRITABLE_ROOT, "")).strip())
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        problems += [f"container {container.get('name')}: {p}"
                     for p in _container_problems(container.get("securityContext") or {}, context, writable_ok)]
    return problems


def _container_problems(own: dict[str, Any], pod: dict[str, Any], writable_ok: bool) -> Problems:
    def effective(field: str) -> Any:
        return own[field] if field in own else pod.get(field)

    problems = []
    if effective("runAsNonRoot") is not True:
        problems.append("securityContext.runAsNonRoot must be true (here or on the pod)")
    if effective("runAsUser") == 0:
        problems.append("securityContext.runAsUser is 0 (root)")
    if own.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation must be false (setuid programs, sudo)")
    if own.get("privileged"):
        problems.append("securityContext.privileged must not be true")
    capabilities = own.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("securityContext.capabilities.drop must include ALL")
    if capabilities.get("add"):
        problems.append(f"securityContext.capabilities.add {capabilities['add']}: add none")
    if ((effective("seccompProfile") or {}).get("type")) not in SECCOMP_PROFILES:
        problems.append("securityContext.seccompProfile.type must be RuntimeDefault (here or on the pod)")
    if own.get("readOnlyRootFilesystem") is not True and not writable_ok:
        problems.append(f"securityContext.readOnlyRootFilesystem must be true (mount an emptyDir where it "
                        f"writes), or the pod template's annotation {WRITABLE_ROOT} says why not")
    return problems


def check_read_only_serving(objects: Objects) -> Problems:
    problems = []
    for obj in (o for o in objects if o.get("kind") == "RayService"):
        for where, pod, _ in pod_templates(obj):
            persistent = {v.get("name"): v for v in pod.get("volumes") or []
                          if any(kind in v for kind in PERSISTENT_VOLUMES)}
            for container in pod.get("containers") or []:
                for mount in container.get("volumeMounts") or []:
                    volume = persistent.get(mount.get("name"))
                    if volume is not None and mount.get("readOnly") is not True:
                        problems.append(
                            f"{name_of(obj)}: {where}container {container.get('name')}: {mount.get('mountPath')} "
                            f"(volume {mount.get('name')}) must be mounted readOnly: the pods answer clients, and "
                            "one compromised must not plant a checkpoint, adapter or table for other stages")
    return problems


def check_redis(objects: Objects) -> Problems:
    templates = [(obj, where, pod, meta or {}) for obj in objects for where, pod, meta in pod_templates(obj)]
    problems = []
    for server in (t for t in templates if _redis_container(t[2]) is not None):
        problems += _check_redis_server(server, templates, objects)
    return problems


def _check_redis_server(server: Template, templates: list[Template], objects: Objects) -> Problems:
    obj, where, pod, meta = server
    prefix = f"{name_of(obj)}: {where}"
    container = _redis_container(pod)
    password, problems = _requirepass(container, objects)
    problems = [f"{prefix}{p}" for p in problems]
    services = {s["metadata"]["name"] for s in objects if s.get("kind") == "Service"
                and _selects((s.get("spec") or {}).get("selector"), meta.get("labels") or {})}
    clients = []
    for other in templates:
        for name, url in _redis_urls(other[2], services, objects):
            if not any(other is c for c in clients):
                clients.append(other)
            if password is not None and urlsplit(url).password != password:
                problems.append(f"{name_of(other[0])}: {other[1]}{name} names Redis "
                                f"({urlsplit(url).hostname}) without the password it asks for")
    return problems + _check_network_policy(server, templates, clients, objects)


def _redis_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in pod.get("containers") or []:
        repository = str(container.get("image", "")).split("@")[0].rsplit("/", 1)[-1].split(":")[0]
        if repository == "redis":
            return container
    return None


def _requirepass(container: dict[str, Any], objects: Objects) -> tuple[str | None, Problems]:
    """The password the Redis container requires (resolved from its Secret), and what is wrong."""
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    script = " ".join(words)
    if "requirepass" not in script:
        return None, [f"container {container.get('name')}: Redis runs without a password: set requirepass from a "
                      "Secret (every pod in the namespace could read and rewrite the crawl's state)"]
    if "--protected-mode" in words and "no" in words[words.index("--protected-mode") + 1:][:1]:
        return None, [f"container {container.get('name')}: --protected-mode no: leave protected mode on"]
    for item in container.get("env") or []:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref and re.search(rf"\$\(?\{{?{re.escape(item.get('name', ''))}\b", script):
            secret = find(objects, "Secret", ref.get("name"))
            raw = ((secret or {}).get("data") or {}).get(ref.get("key"))
            return (secret_value(raw) if raw is not None else None), []
    return None, [f"container {container.get('name')}: requirepass is not read from a Secret (an env var with a "
                  f"secretKeyRef): {shlex.join(words)[:80]}..."]


def _redis_urls(pod: dict[str, Any], services: set[str], objects: Objects) -> list[tuple[str, str]]:
    """(`container X: VAR`, url) of each Redis URL naming one of `services` that the pod's containers get."""
    found = []
    for container in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        env, _ = pod_environment(container, objects)
        for name, value in env.items():
            parts = urlsplit(value) if value.startswith(("redis://", "rediss://")) else None
            if parts is not None and (parts.hostname or "").split(".")[0] in services:
                found.append((f"container {container.get('name')}: {name}", value))
    return found


def _check_network_policy(server: Template, templates: list[Template], clients: list[Template],
                          objects: Objects) -> Problems:
    obj, where, _, meta = server
    labels = meta.get("labels") or {}
    policies = [p for p in objects if p.get("kind") == "NetworkPolicy"
                and _selects(((p.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}, labels)
                and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or ["Ingress"])]
    if not policies:
        return [f"{name_of(obj)}: {where}no NetworkPolicy selects the Redis pod: every pod can reach it"]
    problems, selectors = [], []
    for policy in policies:
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            peers = rule.get("from") or []
            if not peers:
                problems.append(f"{name_of(policy)}: an ingress rule without `from` admits every pod and address")
            for peer in peers:
                match = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    problems.append(f"{name_of(policy)}: admits pods of other namespaces or addresses; name the "
                                    "pods that use Redis by a podSelector")
                elif not match or (peer.get("podSelector") or {}).get("matchExpressions"):
                    problems.append(f"{name_of(policy)}: podSelector {peer.get('podSelector')} admits every pod of "
                                    "the namespace; select the pods that use Redis by their labels")
                else:
                    selectors.append(match)
    admitted = [t for t in templates if any(_selects(s, t[3].get("labels") or {}) for s in selectors)]
    for client in clients:
        if not any(client is t for t in admitted):
            problems.append(f"{name_of(client[0])}: {client[1]}gets the Redis URL but no NetworkPolicy admits it "
                            f"(labels {(client[3].get('labels') or {})})")
    for other in admitted:
        if not any(other is c for c in clients):
            problems.append(f"{name_of(other[0])}: {other[1]}is admitted to Redis but gets no Redis URL: admit only "
                            "the pods that use it")
    return problems


def _selects(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    return bool(selector) and all(str(labels.get(k)) == str(v) for k, v in selector.items())
