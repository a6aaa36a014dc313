"""Check a kustomize overlay of `k8s/` offline, before `kubectl apply -k`: `python -m cluster.k8s k8s/overlays/gpu`.

Every check returns problems as lines "<Kind>/<name>: <what is wrong>"; none means it passed.

- `check_ray_schema`: RayJob/RayService/RayCluster against the KubeRay CRDs' openAPIV3Schema, with
  unknown fields as errors (what `kubectl apply`'s strict field validation does), and the
  admission rules KubeRay applies that can be checked without a cluster (`check_kuberay_rules`).
- `check_core_schema`: every core resource, and every pod template inside a Ray resource, with
  kubernetes-validate (the Kubernetes OpenAPI schemas, strict).
- `check_references`: every Secret, ConfigMap (and key) and PVC a pod uses is in the render;
  volume mounts name volumes; Services select pods and name their ports.
- `check_stages`: each RayJob runs `python -m <stage module> --config <file>` of a real stage,
  whose config file (from the mounted ConfigMap, with the pod's environment) loads with that
  stage's model; secrets come from Secrets, never literals or the runtime env; absolute paths lie
  on mounted volumes; in-cluster URLs name Services that exist; the Ray cluster holds the actors
  the stage asks for, and every GPU it asks for is used.
- `check_serve`: the RayService's serveConfigV2 is serve/serve_config.yaml, and is what
  `serve.deploy_config` writes for the mounted serve.yaml; optionally the app builds from it.
"""

from __future__ import annotations

import argparse
import base64
import functools
import importlib.util
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cluster.config import ConfigError, load_config, parse_override, secret_fields
from cluster.stages import STAGES, Stage

REPO = Path(__file__).resolve().parents[1]
SERVE_CONFIG = REPO / "serve" / "serve_config.yaml"
RAY_KINDS = ("RayJob", "RayService", "RayCluster")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayService": "ray.io_rayservices.yaml"}
# Where KubeRay v1.7's ray.io_*.yaml CRDs are looked for, after --crds: $SOCIALALIGN_KUBERAY_CRDS,
# the repo's .cache/kuberay-crds, then ../shared/schemas/kuberay beside the checkout.
CRD_ENV = "SOCIALALIGN_KUBERAY_CRDS"
CRD_DIRS = (REPO / ".cache" / "kuberay-crds", REPO.parent / "shared" / "schemas" / "kuberay")
K8S_VERSION = "1.32"
MAX_RAY_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # KubeRay: 63 - len("-serve-svc") [- 6]
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
RUNTIME_ENV_KEYS = {"env_vars", "working_dir", "py_modules", "pip", "uv", "conda", "container", "image_uri",
                    "excludes", "config", "nsight", "py_executable", "java_jars"}
RAY_DATA_STAGES = {"build-dataset", "train", "predict", "evaluate"}
GPU = "nvidia.com/gpu"
Problems = list[str]


class RenderError(RuntimeError):
    """`kubectl kustomize` failed (its message says why)."""


def render(overlay: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k <overlay>` would send, rendered offline."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RenderError("kubectl is not installed (kubectl kustomize renders the overlays)")
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate(objects: list[dict[str, Any]], crd_dir: str | os.PathLike[str] | None, build_app: bool = False) -> Problems:
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
    return problems


# --- Ray resources against the KubeRay CRDs ------------------------------------------------------


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
    elif out.get("type") in ("object", ["object", "null"]) and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    out.pop("nullable", None)
    return out


def check_ray_schema(obj: dict[str, Any], schemas: Mapping[str, dict[str, Any]]) -> Problems:
    from jsonschema import Draft7Validator

    schema = schemas.get(obj.get("kind", ""))
    if schema is None or obj.get("apiVersion") != "ray.io/v1":
        return [f"{_name(obj)}: no KubeRay schema for {obj.get('apiVersion')} {obj.get('kind')} (expected ray.io/v1)"]
    errors = sorted(Draft7Validator(schema).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_name(obj)}: {_path(e.absolute_path)}: {e.message}" for e in errors]


def check_kuberay_rules(obj: dict[str, Any]) -> Problems:
    """What KubeRay's admission (ValidateRayJobSpec & co.) refuses that a schema cannot say."""
    kind, spec, problems = obj.get("kind"), obj.get("spec") or {}, []
    name = (obj.get("metadata") or {}).get("name", "")
    if not DNS1035.match(name) or len(name) > MAX_RAY_NAME.get(kind, 63):
        problems.append(f"name {name!r}: KubeRay needs a DNS-1035 label of at most {MAX_RAY_NAME.get(kind, 63)} characters")
    cluster = _cluster_spec(obj) or {}
    head = cluster.get("headGroupSpec") or {}
    if not ((head.get("template") or {}).get("spec") or {}).get("containers"):
        problems.append("headGroupSpec: the head pod template has no container")
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
        elif all(isinstance(v, int) for v in (low, high)) and not low <= (replicas if isinstance(replicas, int) else low) <= high:
            problems.append(f"worker group {gname}: needs minReplicas <= replicas <= maxReplicas")
    for gname, group in [("head", head), *[(g.get("groupName"), g) for g in cluster.get("workerGroupSpecs") or []]]:
        params = group.get("rayStartParams") or {}
        if "labels" in params:
            problems.append(f"{gname}: rayStartParams.labels is not supported; use the group's labels field")
        if group.get("resources") and any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")):
            problems.append(f"{gname}: Ray resources set both in rayStartParams and in resources")
    if (cluster.get("authOptions") or {}).get("mode") == "token" and not _version_at_least(cluster.get("rayVersion"), (2, 52)):
        problems.append(f"authOptions.mode token needs rayVersion >= 2.52.0 (got {cluster.get('rayVersion')!r})")
    if kind == "RayJob":
        problems += _rayjob_rules(spec)
    if kind == "RayService":
        try:
            if not isinstance(yaml.safe_load(spec.get("serveConfigV2") or ""), dict):
                problems.append("serveConfigV2: expected a YAML mapping (a Serve config)")
        except yaml.YAMLError as error:
            problems.append(f"serveConfigV2: invalid YAML ({error})")
    return [f"{_name(obj)}: {p}" for p in problems]


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
    try:
        env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
    except yaml.YAMLError as error:
        return [*problems, f"runtimeEnvYAML: invalid YAML ({error})"]
    if not isinstance(env, dict):
        problems.append("runtimeEnvYAML: expected a mapping")
    elif unknown := sorted(set(env) - RUNTIME_ENV_KEYS):
        problems.append(f"runtimeEnvYAML: unknown runtime env fields {unknown}")
    return problems


# --- core resources with kubernetes-validate ---------------------------------------------------


def check_core_schema(obj: dict[str, Any], k8s_version: str = K8S_VERSION) -> Problems:
    """Core resources as they are; Ray resources by their pod templates (as Pods)."""
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
            problems.append(f"{_name(obj)}: {where}{_path(error.path)}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{_name(obj)}: {error.message}")
    return problems


# --- cross-references --------------------------------------------------------------------------


def check_references(objects: list[dict[str, Any]]) -> Problems:
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
            problems += [f"{_name(obj)}: {where}{p}" for p in found]
    problems += _service_selectors(objects)
    return problems


def _pod_references(spec: dict[str, Any], secrets: dict[str, set[str]], configmaps: dict[str, set[str]],
                    claims: set[str]) -> Problems:
    problems, volumes = [], set()

    def need(kind: str, known: dict[str, set[str]], name: str | None, key: str | None, optional: bool) -> None:
        if optional:
            return
        if name not in known:
            problems.append(f"{kind} {name!r} is not in the render")
        elif key is not None and key not in known[name]:
            problems.append(f"{kind} {name!r} has no key {key!r}")

    for volume in spec.get("volumes") or []:
        volumes.add(volume.get("name"))
        if "configMap" in volume:
            cm = volume["configMap"]
            for item in cm.get("items") or [None]:
                need("ConfigMap", configmaps, cm.get("name"), item and item.get("key"), cm.get("optional", False))
        if "secret" in volume:
            sec = volume["secret"]
            for item in sec.get("items") or [None]:
                need("Secret", secrets, sec.get("secretName"), item and item.get("key"), sec.get("optional", False))
        if "persistentVolumeClaim" in volume and volume["persistentVolumeClaim"].get("claimName") not in claims:
            problems.append(f"PersistentVolumeClaim {volume['persistentVolumeClaim'].get('claimName')!r} is not in the render")
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                need("Secret", secrets, ref.get("name"), ref.get("key"), ref.get("optional", False))
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                need("ConfigMap", configmaps, ref.get("name"), ref.get("key"), ref.get("optional", False))
        for env_from in container.get("envFrom") or []:
            if "secretRef" in env_from:
                need("Secret", secrets, env_from["secretRef"].get("name"), None, env_from["secretRef"].get("optional", False))
            if "configMapRef" in env_from:
                ref = env_from["configMapRef"]
                need("ConfigMap", configmaps, ref.get("name"), None, ref.get("optional", False))
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volumes and mount.get("name") not in claims:
                problems.append(f"container {container.get('name')}: volumeMount {mount.get('name')!r} names no volume")
    return problems


def _service_selectors(objects: list[dict[str, Any]]) -> Problems:
    pods = [(spec, meta or {}) for obj in objects if obj.get("kind") not in RAY_KINDS for _, spec, meta in pod_templates(obj)]
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            continue
        matched = [spec for spec, meta in pods if selector.items() <= (meta.get("labels") or {}).items()]
        if not matched:
            problems.append(f"{_name(service)}: selector {selector} matches no pod template in the render")
            continue
        names = {p.get("name") for spec in matched for c in spec.get("containers") or [] for p in c.get("ports") or []}
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                problems.append(f"{_name(service)}: targetPort {target!r} is no named container port of its pods")
    return problems


# --- stages: entrypoints, configs, secrets, paths, URLs, sizes ----------------------------------


def check_stages(objects: list[dict[str, Any]]) -> Problems:
    problems = []
    for obj in objects:
        if obj.get("kind") == "RayJob":
            problems += [f"{_name(obj)}: {p}" for p in _check_rayjob_stage(obj, objects)]
    problems += _check_ray_versions(objects) + _check_images(objects)
    return problems


def rayjob_command(job: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(module, config path, overrides) of `python -m <module> [--config <path>] [key=value ...]`."""
    argv = shlex.split(str((job.get("spec") or {}).get("entrypoint") or ""))
    if argv[:2] != ["python", "-m"] or len(argv) < 3:
        raise ValueError("entrypoint: expected `python -m <stage module> --config /config/<stage>.yaml`")
    module, rest, config = argv[2], argv[3:], None
    if rest[:1] == ["--config"] and len(rest) >= 2:
        config, rest = rest[1], rest[2:]
    if bad := [item for item in rest if "=" not in item or item.startswith("-")]:
        raise ValueError(f"entrypoint: unexpected arguments {bad} (only --config and key=value)")
    return module, config, rest


def stage_of_module(module: str) -> Stage:
    """The registered stage whose `python -m` entry is `module`, checked to be importable as one."""
    stage = next((s for s in STAGES.values() if s.module == module), None)
    if stage is None:
        known = sorted(s.module for s in STAGES.values())
        raise ValueError(f"entrypoint: {module!r} is not a stage module (cluster.stages.STAGES: {', '.join(known)})")
    spec = importlib.util.find_spec(module)
    runnable = spec is not None and (spec.submodule_search_locations is None or importlib.util.find_spec(f"{module}.__main__"))
    if not runnable:
        raise ValueError(f"entrypoint: `python -m {module}` cannot run here (no module or no __main__)")
    return stage


def _check_rayjob_stage(job: dict[str, Any], objects: list[dict[str, Any]]) -> Problems:
    try:
        module, config_path, overrides = rayjob_command(job)
        stage = stage_of_module(module)
    except ValueError as error:
        return [str(error)]
    problems = _runtime_env_secrets(job)
    cluster = _cluster_spec(job)
    head = _ray_containers(cluster)[:1]
    if not head:
        return problems
    env, env_problems = pod_environment(head[0], objects)
    problems += env_problems + _secret_sources(stage, job)
    if config_path is None:
        return [*problems, "entrypoint: no --config file (every stage here reads /config/<stage>.yaml)"]
    try:
        config = load_mounted_config(stage.config_model(), config_path, overrides, head[0], cluster, objects, env)
    except (ConfigError, ValueError) as error:
        return [*problems, *(f"{stage.name} config: {line}" for line in str(error).splitlines())]
    problems += _paths_on_volumes(config.model_dump(mode="json"), cluster)
    problems += _urls_name_services([*_strings(config.model_dump(mode="json")), *env.values()], objects)
    problems += _stage_fits(stage.name, config, cluster)
    return problems


def load_mounted_config(model: type, path: str, overrides: list[str], container: dict[str, Any],
                        cluster: dict[str, Any], objects: list[dict[str, Any]], environ: Mapping[str, str]) -> Any:
    """Load `path` as the pod would: the file from the ConfigMap mounted there, the pod's environment."""
    volumes = {v.get("name"): v for v in ((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec", {}).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        root = mount.get("mountPath", "").rstrip("/") + "/"
        volume = volumes.get(mount.get("name")) or {}
        if path.startswith(root) and "configMap" in volume:
            key = path[len(root):]
            configmap = _find(objects, "ConfigMap", volume["configMap"].get("name"))
            if configmap is None or key not in (configmap.get("data") or {}):
                raise ValueError(f"{path}: no key {key!r} in ConfigMap {volume['configMap'].get('name')!r}")
            with tempfile.TemporaryDirectory() as scratch:
                shown = Path(scratch) / f"configmap {configmap['metadata']['name']}" / key
                shown.parent.mkdir()
                shown.write_text(configmap["data"][key], encoding="utf-8")
                try:
                    return load_config(model, shown, overrides, environ=environ)
                except ConfigError as error:
                    raise ConfigError(str(error).replace(f"{scratch}/", "")) from None
    raise ValueError(f"{path}: not on a ConfigMap volume mounted in the head container")


def pod_environment(container: dict[str, Any], objects: list[dict[str, Any]]) -> tuple[dict[str, str], Problems]:
    """The container's environment as the pod gets it (Secret and ConfigMap values resolved)."""
    env, problems = {}, []
    for item in container.get("env") or []:
        name, source = item.get("name"), item.get("valueFrom") or {}
        if "value" in item:
            env[name] = str(item["value"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, ref = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else ("ConfigMap", source["configMapKeyRef"])
            found = _find(objects, kind, ref.get("name"))
            if found is not None and ref.get("key") in (found.get("data") or {}):
                raw = found["data"][ref["key"]]
                env[name] = base64.b64decode(raw).decode("utf-8") if kind == "Secret" else raw
    for name in sorted({n for names in _all_secret_envs() for n in names} & {i.get("name") for i in container.get("env") or [] if "value" in i}):
        problems.append(f"container {container.get('name')}: {name} is a secret but set as a literal value; use a secretKeyRef")
    return env, problems


def _secret_sources(stage: Stage, job: dict[str, Any]) -> Problems:
    """Each secret field of the stage reaches the head container from a Secret."""
    head = _ray_containers(_cluster_spec(job))[0]
    from_secrets = {e.get("name") for e in head.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
    return [f"{stage.name}: secret {field} reaches the head container from no Secret (env {' or '.join(names)})"
            for field, names in secret_fields(stage.config_model()).items() if not from_secrets & set(names)]


def _runtime_env_secrets(job: dict[str, Any]) -> Problems:
    try:
        env_vars = (yaml.safe_load((job.get("spec") or {}).get("runtimeEnvYAML") or "{}") or {}).get("env_vars") or {}
    except (yaml.YAMLError, AttributeError):
        return []
    secret_names = {n for names in _all_secret_envs() for n in names}
    return [f"runtimeEnvYAML: {name} is a secret; the dashboard shows the runtime env" for name in sorted(set(env_vars) & secret_names)]


def _paths_on_volumes(dumped: Any, cluster: dict[str, Any]) -> Problems:
    problems = []
    for container in _ray_containers(cluster):
        mounts = [m.get("mountPath", "").rstrip("/") + "/" for m in container.get("volumeMounts") or []]
        for value in _strings(dumped):
            if value.startswith("/") and not any((value.rstrip("/") + "/").startswith(m) for m in mounts):
                problems.append(f"{value}: not on a volume mounted in container {container.get('name')} (shared storage)")
    return sorted(set(problems))


def _urls_name_services(values: list[str], objects: list[dict[str, Any]]) -> Problems:
    """In-namespace URLs (bare service names) must name a Service of the render, or one KubeRay makes."""
    ports: dict[str, set[int]] = {}
    for obj in objects:
        if obj.get("kind") == "Service":
            ports[obj["metadata"]["name"]] = {p.get("port") for p in obj["spec"].get("ports") or []}
        if obj.get("kind") == "RayService":
            serve_port = ((yaml.safe_load(obj["spec"].get("serveConfigV2") or "{}") or {}).get("http_options") or {}).get("port", 8000)
            ports[f"{obj['metadata']['name']}-serve-svc"] = {serve_port}
    problems = []
    for value in values:
        parts = urlsplit(value) if "://" in value else None
        if parts is None or not parts.hostname or "." in parts.hostname.removesuffix(".svc.cluster.local").removesuffix(".svc"):
            continue
        host = parts.hostname.split(".")[0]
        port = parts.port or {"http": 80, "https": 443, "redis": 6379}.get(parts.scheme)
        if host not in ports:
            problems.append(f"{parts.scheme}://{host}: no Service {host!r} in the render")
        elif port not in ports[host]:
            problems.append(f"{parts.scheme}://{host}:{port}: Service {host!r} has ports {sorted(ports[host])}")
    return problems


def ray_resources(group: dict[str, Any]) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees on one pod of a group: rayStartParams, else the container's limits (or requests)."""
    params = group.get("rayStartParams") or {}
    container = (((group.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
    resources = container.get("resources") or {}
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    cpus = float(params["num-cpus"]) if "num-cpus" in params else math.ceil(_quantity(amounts.get("cpu", "0")))
    gpus = float(params["num-gpus"]) if "num-gpus" in params else _quantity(amounts.get(GPU, "0"))
    return cpus, gpus


def stage_demand(stage: str, config: Any) -> tuple[int, float, float, bool]:
    """(actors, CPUs each, GPUs each, uses Ray Data) the stage asks Ray for."""
    if stage == "crawl":
        return config.num_actors, config.actor_cpus, 0.0, False
    if stage == "train":
        per = config.resources_per_worker
        return config.num_workers, per.get("CPU", 1.0), per.get("GPU", 1.0 if config.use_gpu else 0.0), True
    if stage == "serve":
        return config.num_replicas, config.replica_cpus, config.replica_gpus, False
    if stage == "predict" and config.endpoint is None:
        return config.num_workers, 1.0, 1.0 if config.use_gpu else 0.0, True
    if stage == "build-dataset":
        return config.persona_workers, 0.25, 0.0, True
    return 0, 0.0, 0.0, stage in RAY_DATA_STAGES


def _stage_fits(stage: str, config: Any, cluster: dict[str, Any]) -> Problems:
    count, cpus, gpus, data = stage_demand(stage, config)
    groups = [(1, cluster.get("headGroupSpec") or {})] + [
        (g.get("replicas", g.get("minReplicas", 0)) or 0, g) for g in cluster.get("workerGroupSpecs") or []]
    pods = [ray_resources(group) for replicas, group in groups for _ in range(replicas)]
    fits = sum(min(math.floor(c / cpus + 1e-9) if cpus else math.inf, math.floor(g / gpus + 1e-9) if gpus else math.inf)
               for c, g in pods)
    total_cpus, total_gpus = sum(c for c, _ in pods), sum(g for _, g in pods)
    problems = []
    if count and fits < count:
        problems.append(f"{stage}: {count} actors of {cpus:g} CPU / {gpus:g} GPU do not fit the Ray cluster's pods "
                        f"({', '.join(f'{c:g} CPU / {g:g} GPU' for c, g in pods)})")
    elif data and total_cpus - count * cpus < 1:
        problems.append(f"{stage}: no CPU left for its Ray Data tasks ({total_cpus:g} CPUs, {count * cpus:g} taken)")
    if total_gpus and not count * gpus:
        problems.append(f"{stage}: the Ray cluster has {total_gpus:g} GPUs that the stage's config never uses")
    return problems


def _check_ray_versions(objects: list[dict[str, Any]]) -> Problems:
    ray_version = installed_version("ray")
    return [f"{_name(o)}: rayVersion {_cluster_spec(o).get('rayVersion')!r} is not the Ray this project runs ({ray_version})"
            for o in objects if o.get("kind") in RAY_KINDS and str(_cluster_spec(o).get("rayVersion")) != ray_version]


def _check_images(objects: list[dict[str, Any]]) -> Problems:
    problems = []
    for obj in objects:
        for where, spec, _ in pod_templates(obj):
            for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
                image = str(container.get("image", ""))
                tag = image.rsplit("/", 1)[-1]
                if ":" not in tag and "@" not in image or tag.endswith(":latest"):
                    problems.append(f"{_name(obj)}: {where}container {container.get('name')}: image {image!r} has no "
                                    "pinned tag (overlays include k8s/components/versions, which sets it)")
    return problems


# --- serve ------------------------------------------------------------------------------------


def check_serve(objects: list[dict[str, Any]], build_app: bool = False) -> Problems:
    services = [o for o in objects if o.get("kind") == "RayService"]
    problems = []
    for service in services:
        problems += [f"{_name(service)}: {p}" for p in _check_rayservice(service, objects, build_app)]
    return problems


def _check_rayservice(service: dict[str, Any], objects: list[dict[str, Any]], build_app: bool) -> Problems:
    try:
        document = yaml.safe_load(service["spec"].get("serveConfigV2") or "")
    except yaml.YAMLError:
        return []  # reported by check_kuberay_rules
    problems = []
    if document != yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8")):
        problems.append("serveConfigV2 differs from serve/serve_config.yaml (the Serve config the CLI uses)")
    apps = (document or {}).get("applications") or []
    if len(apps) != 1 or apps[0].get("import_path") != "serve.app:app_builder":
        return [*problems, "serveConfigV2: expected one application built by serve.app:app_builder"]
    args = apps[0].get("args") or {}
    cluster = _cluster_spec(service)
    head = _ray_containers(cluster)[0]
    env, env_problems = pod_environment(head, objects)
    problems += env_problems
    from_secrets = {e.get("name") for e in head.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
    for field, names in secret_fields(STAGES["serve"].config_model()).items():
        if not from_secrets & set(names):
            problems.append(f"serve: secret {field} reaches the head container from no Secret (env {' or '.join(names)})")
    overrides = list(args.get("overrides") or [])
    try:
        for item in overrides:
            parse_override(item)
        config = load_mounted_config(STAGES["serve"].config_model(), str(args.get("config")), overrides, head, cluster, objects, env)
    except (ConfigError, ValueError) as error:
        return [*problems, *(f"serve config: {line}" for line in str(error).splitlines())]
    from serve.app import serve_config_document

    if serve_config_document(config, str(args["config"]), overrides) != document:
        problems.append("serveConfigV2 is not what `python -m serve.deploy_config` writes for the mounted serve.yaml "
                        "(host, port or app name differ)")
    serve_ports = {p.get("containerPort") for p in head.get("ports") or [] if p.get("name") == "serve"}
    if config.port not in serve_ports:
        problems.append(f"serve: port {config.port} is not the head container's `serve` port {sorted(serve_ports)}")
    problems += _paths_on_volumes(config.model_dump(mode="json"), cluster)
    problems += _stage_fits("serve", config, cluster)
    if build_app:
        problems += _build_app(service, args, head, cluster, objects, env)
    return problems


def _build_app(service: dict[str, Any], args: dict[str, Any], head: dict[str, Any], cluster: dict[str, Any],
               objects: list[dict[str, Any]], env: Mapping[str, str]) -> Problems:
    """Run serve.app:app_builder on the mounted serve.yaml, as the Serve controller will."""
    from ray.serve import Application

    from serve.app import app_builder

    path = str(args["config"])
    volumes = {v["name"]: v for v in cluster["headGroupSpec"]["template"]["spec"].get("volumes") or []}
    mount = next(m for m in head.get("volumeMounts") or [] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    configmap = _find(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / Path(path).name
        local.write_text(configmap["data"][path[len(mount["mountPath"].rstrip("/")) + 1:]], encoding="utf-8")
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            app = app_builder({**args, "config": str(local)})
        except Exception as error:  # noqa: BLE001 - whatever the builder raises is the finding
            return [f"serve.app:app_builder failed: {error}"]
        finally:
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
    return [] if isinstance(app, Application) else [f"serve.app:app_builder returned {type(app).__name__}"]


# --- helpers ---------------------------------------------------------------------------------


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
        cluster = _cluster_spec(obj)
        head = (cluster.get("headGroupSpec") or {}).get("template") or {}
        yield "headGroupSpec.template: ", head.get("spec") or {}, head.get("metadata")
        for group in cluster.get("workerGroupSpecs") or []:
            template = group.get("template") or {}
            yield f"worker group {group.get('groupName')}: ", template.get("spec") or {}, template.get("metadata")
        if kind == "RayJob" and spec.get("submitterPodTemplate"):
            template = spec["submitterPodTemplate"]
            yield "submitterPodTemplate: ", template.get("spec") or {}, template.get("metadata")


def _cluster_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    return {"RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}.get(obj.get("kind"), spec) or {}


def _ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ray container (the first) of the head, then of each worker group."""
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    found = [((g.get("template") or {}).get("spec") or {}).get("containers") or [] for g in groups]
    return [containers[0] for containers in found if containers]


def _all_secret_envs() -> list[list[str]]:
    return [names for stage in STAGES.values() for names in secret_fields(stage.config_model()).values()]


def _find(objects: list[dict[str, Any]], kind: str, name: str | None) -> dict[str, Any] | None:
    return next((o for o in objects if o.get("kind") == kind and o["metadata"].get("name") == name), None)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _quantity(text: Any) -> float:
    text = str(text)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in sorted(suffixes.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _version_at_least(text: Any, minimum: tuple[int, ...]) -> bool:
    numbers = re.findall(r"\d+", str(text or ""))
    return bool(numbers) and tuple(int(n) for n in numbers[: len(minimum)]) >= minimum


def _name(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "(top)"


def main(argv: list[str] | None = None) -> int:
    """0 when every overlay passes, 1 when one has problems, 2 when the CRDs to check Ray resources are missing."""
    parser = argparse.ArgumentParser(prog="python -m cluster.k8s", description=__doc__.splitlines()[0])
    parser.add_argument("overlays", nargs="+", help="kustomize directories, e.g. k8s/overlays/gpu")
    crds = parser.add_mutually_exclusive_group()
    crds.add_argument("--crds", help=f"directory with KubeRay's ray.io_*.yaml CRDs (default: ${CRD_ENV}, "
                      f"else the first of {' and '.join(str(d) for d in CRD_DIRS)} that has them)")
    crds.add_argument("--no-crds", action="store_true", help="check Ray resources without their CRD schema")
    parser.add_argument("--build-app", action="store_true", help="also build the Serve app from the RayService's config")
    args = parser.parse_args(argv)
    crd_dir = _crd_dir(args, parser.prog)
    if crd_dir is None and not args.no_crds:
        return 2
    failed = False
    for overlay in args.overlays:
        try:
            problems = validate(render(overlay), crd_dir, build_app=args.build_app)
        except RenderError as error:
            problems = [str(error)]
        failed |= bool(problems)
        print(f"{overlay}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


def _crd_dir(args: argparse.Namespace, prog: str) -> Path | None:
    """The CRD directory to use; None (with the reason on stderr) when there is none."""
    if args.no_crds:
        print(f"{prog}: warning: --no-crds: Ray resources are checked without their CRD schema", file=sys.stderr)
        return None
    if args.crds is not None:
        found = Path(args.crds) if has_crds(args.crds) else None
        where = args.crds
    else:
        found = find_crds()
        where = " or ".join(str(d) for d in crd_candidates())
    if found is None:
        print(f"{prog}: error: no KubeRay CRDs ({', '.join(CRD_FILES.values())}) in {where}: put KubeRay v1.7's "
              f"ray-operator/config/crd/bases there, point --crds or ${CRD_ENV} at them, or pass --no-crds "
              "to check Ray resources without their schema", file=sys.stderr)
    return found

if __name__ == "__main__":
    sys.exit(main())
