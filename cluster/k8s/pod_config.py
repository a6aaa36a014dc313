"""What a stage sees in its pod: its environment (Secret and ConfigMap values resolved) and its
config file from the mounted ConfigMap; secrets reach it from Secrets only.

A Secret value holding PLACEHOLDER is one the operator replaces before deploying (the base and
the example overlay ship them). The checks read it as a stand-in of the same shape, a hex string
in place of each placeholder (the same one wherever the same placeholder appears, so a Redis
password and the URL that carries it still agree), and `placeholder_secrets` lists them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster.config import ConfigError, load_config, secret_fields
from cluster.k8s.manifest import Objects, Problems, find
from cluster.stage_config import StageConfig
from cluster.stages import STAGES, Stage

PLACEHOLDER = re.compile(r"PLACEHOLDER[\w.-]*")


def load_mounted_config(model: type[StageConfig], path: str, overrides: list[str], container: dict[str, Any],
                        cluster: dict[str, Any], objects: Objects, environ: Mapping[str, str]) -> Any:
    """Load `path` as the pod would: the file from the ConfigMap mounted there, the pod's environment."""
    with mounted_copy(path, container, cluster, objects) as copy:
        try:
            return load_config(model, copy, overrides, environ=environ)
        except ConfigError as error:  # name the file after its ConfigMap, not the scratch directory
            raise ConfigError(str(error).replace(f"{copy.parents[1]}/", "")) from None


@contextmanager
def mounted_copy(path: str, container: dict[str, Any], cluster: dict[str, Any], objects: Objects) -> Iterator[Path]:
    """A local copy of the file a ConfigMap volume puts at `path` in the container (a head container),
    as `<scratch>/configmap <name>/<key>`; ValueError when no ConfigMap holds it."""
    configmap, key = _configmap_at(path, container, cluster, objects)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / f"configmap {configmap['metadata']['name']}" / key
        copy.parent.mkdir()
        copy.write_text(configmap["data"][key], encoding="utf-8")
        yield copy


def _configmap_at(path: str, container: dict[str, Any], cluster: dict[str, Any],
                  objects: Objects) -> tuple[dict[str, Any], str]:
    head_spec = ((cluster.get("headGroupSpec") or {}).get("template") or {}).get("spec", {})
    volumes = {v.get("name"): v for v in head_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        root = mount.get("mountPath", "").rstrip("/") + "/"
        volume = volumes.get(mount.get("name")) or {}
        if path.startswith(root) and "configMap" in volume:
            key = path[len(root):]
            configmap = find(objects, "ConfigMap", volume["configMap"].get("name"))
            if configmap is None or key not in (configmap.get("data") or {}):
                raise ValueError(f"{path}: no key {key!r} in ConfigMap {volume['configMap'].get('name')!r}")
            return configmap, key
    raise ValueError(f"{path}: not on a ConfigMap volume mounted in the head container")


def pod_environment(container: dict[str, Any], objects: Objects) -> tuple[dict[str, str], Problems]:
    """The container's environment as the pod gets it (Secret and ConfigMap values resolved), and
    the secrets it sets as literal values."""
    env = {}
    for item in container.get("env") or []:
        name, source = item.get("name"), item.get("valueFrom") or {}
        if "value" in item:
            env[name] = str(item["value"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
            ref = source["secretKeyRef"] if kind == "Secret" else source["configMapKeyRef"]
            found = find(objects, kind, ref.get("name"))
            if found is not None and ref.get("key") in (found.get("data") or {}):
                raw = found["data"][ref["key"]]
                env[name] = secret_value(raw) if kind == "Secret" else raw
    literals = {i.get("name") for i in container.get("env") or [] if "value" in i}
    problems = [f"container {container.get('name')}: {name} is a secret but set as a literal value; use a secretKeyRef"
                for name in sorted(secret_env_names() & literals)]
    return env, problems


def secret_value(raw: str) -> str:
    """A Secret's `data` value as the pod reads it, each placeholder in it read as its stand-in."""
    value = base64.b64decode(raw).decode("utf-8")
    return PLACEHOLDER.sub(lambda match: hashlib.sha256(match.group().encode()).hexdigest()[:32], value)


def placeholder_secrets(objects: Objects) -> list[str]:
    """`Secret/<name>: <key>, <key>` for each Secret with values that are still placeholders."""
    found = []
    for obj in objects:
        if obj.get("kind") == "Secret":
            keys = [key for key, raw in sorted((obj.get("data") or {}).items())
                    if PLACEHOLDER.search(base64.b64decode(raw).decode("utf-8", errors="replace"))]
            if keys:
                found.append(f"Secret/{obj['metadata']['name']}: {', '.join(keys)}")
    return found


@contextmanager
def pod_environ(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ with the pod's variables set, for code that reads the environment itself."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def secret_env_names() -> set[str]:
    """Every environment variable that carries a secret field of some stage."""
    fields = [secret_fields(stage.config_model()) for stage in STAGES.values()]
    return {name for names_of in fields for names in names_of.values() for name in names}


def secrets_from_secrets(stage: Stage, head: dict[str, Any]) -> Problems:
    """Each secret field of the stage reaches the head container from a Secret."""
    from_secrets = {e.get("name") for e in head.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
    return [f"{stage.name}: secret {field} reaches the head container from no Secret (env {' or '.join(names)})"
            for field, names in secret_fields(stage.config_model()).items() if not from_secrets & set(names)]
