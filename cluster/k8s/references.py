"""Cross-references inside a render: every Secret, ConfigMap (and key) and PVC a pod uses is there,
volume mounts name volumes, and Services select pods and name their ports."""

from __future__ import annotations

from typing import Any

from cluster.k8s.manifest import RAY_KINDS, Objects, Problems, name_of, pod_templates

Known = dict[str, set[str]]  # object name -> its keys


def check_references(objects: Objects) -> Problems:
    secrets = {o["metadata"]["name"]: set(o.get("data") or {}) | set(o.get("stringData") or {})
               for o in objects if o.get("kind") == "Secret"}
    configmaps = {o["metadata"]["name"]: set(o.get("data") or {}) | set(o.get("binaryData") or {})
                  for o in objects if o.get("kind") == "ConfigMap"}
    claims = {o["metadata"]["name"] for o in objects if o.get("kind") == "PersistentVolumeClaim"}
    problems = []
    for obj in objects:
        templates = [t["metadata"]["name"] for t in (obj.get("spec") or {}).get("volumeClaimTemplates") or []]
        for where, spec, _ in pod_templates(obj):
            found = _pod_references(spec, secrets, configmaps, claims | set(templates))
            problems += [f"{name_of(obj)}: {where}{p}" for p in found]
    problems += _service_selectors(objects)
    return problems


class _Needs:
    """Collects the references a pod makes that the render does not hold."""

    def __init__(self, secrets: Known, configmaps: Known) -> None:
        self.known = {"Secret": secrets, "ConfigMap": configmaps}
        self.problems: Problems = []

    def need(self, kind: str, name: str | None, key: str | None, optional: bool) -> None:
        known = self.known[kind]
        if optional:
            return
        if name not in known:
            self.problems.append(f"{kind} {name!r} is not in the render")
        elif key is not None and key not in known[name]:
            self.problems.append(f"{kind} {name!r} has no key {key!r}")


def _pod_references(spec: dict[str, Any], secrets: Known, configmaps: Known, claims: set[str]) -> Problems:
    needs = _Needs(secrets, configmaps)
    volumes = set()
    for volume in spec.get("volumes") or []:
        volumes.add(volume.get("name"))
        _volume_references(volume, needs, claims)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _env_references(container, needs)
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volumes and mount.get("name") not in claims:
                needs.problems.append(
                    f"container {container.get('name')}: volumeMount {mount.get('name')!r} names no volume")
    return needs.problems


def _volume_references(volume: dict[str, Any], needs: _Needs, claims: set[str]) -> None:
    if "configMap" in volume:
        cm = volume["configMap"]
        for item in cm.get("items") or [None]:
            needs.need("ConfigMap", cm.get("name"), item and item.get("key"), cm.get("optional", False))
    if "secret" in volume:
        sec = volume["secret"]
        for item in sec.get("items") or [None]:
            needs.need("Secret", sec.get("secretName"), item and item.get("key"), sec.get("optional", False))
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    if "persistentVolumeClaim" in volume and claim not in claims:
        needs.problems.append(f"PersistentVolumeClaim {claim!r} is not in the render")


def _env_references(container: dict[str, Any], needs: _Needs) -> None:
    for env in container.get("env") or []:
        source = env.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            needs.need("Secret", ref.get("name"), ref.get("key"), ref.get("optional", False))
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            needs.need("ConfigMap", ref.get("name"), ref.get("key"), ref.get("optional", False))
    for env_from in container.get("envFrom") or []:
        if "secretRef" in env_from:
            needs.need("Secret", env_from["secretRef"].get("name"), None, env_from["secretRef"].get("optional", False))
        if "configMapRef" in env_from:
            ref = env_from["configMapRef"]
            needs.need("ConfigMap", ref.get("name"), None, ref.get("optional", False))


def _service_selectors(objects: Objects) -> Problems:
    pods = [(spec, meta or {}) for obj in objects if obj.get("kind") not in RAY_KINDS
            for _, spec, meta in pod_templates(obj)]
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            continue
        matched = [spec for spec, meta in pods if selector.items() <= (meta.get("labels") or {}).items()]
        if not matched:
            problems.append(f"{name_of(service)}: selector {selector} matches no pod template in the render")
            continue
        names = {p.get("name") for spec in matched for c in spec.get("containers") or [] for p in c.get("ports") or []}
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                problems.append(f"{name_of(service)}: targetPort {target!r} is no named container port of its pods")
    return problems
