"""Each RayJob runs a stage: its entrypoint is `python -m <registered stage module> --config <file>`,
that file (from the mounted ConfigMap, with the pod's environment) loads with the stage's model,
secrets come from Secrets (never the runtime env, which the dashboard shows), paths lie on
volumes, in-cluster URLs name Services, and the Ray cluster fits the stage. Versions and images
are checked across the render."""

from __future__ import annotations

import importlib.util
import shlex
from typing import Any

import yaml

from cluster.config import ConfigError
from cluster.k8s.fit import stage_fits
from cluster.k8s.manifest import Objects, Problems, cluster_spec, name_of, ray_containers, strings
from cluster.k8s.pod_config import load_mounted_config, pod_environment, secret_env_names, secrets_from_secrets
from cluster.k8s.targets import paths_on_volumes, urls_name_services
from cluster.k8s.versions import check_images, check_ray_versions
from cluster.stages import STAGES, Stage


def check_stages(objects: Objects) -> Problems:
    problems = []
    for obj in objects:
        if obj.get("kind") == "RayJob":
            problems += [f"{name_of(obj)}: {p}" for p in _check_rayjob_stage(obj, objects)]
    problems += check_ray_versions(objects) + check_images(objects)
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
    is_package = spec is not None and spec.submodule_search_locations is not None
    runnable = spec is not None and (not is_package or importlib.util.find_spec(f"{module}.__main__"))
    if not runnable:
        raise ValueError(f"entrypoint: `python -m {module}` cannot run here (no module or no __main__)")
    return stage


def _check_rayjob_stage(job: dict[str, Any], objects: Objects) -> Problems:
    try:
        module, config_path, overrides = rayjob_command(job)
        stage = stage_of_module(module)
    except ValueError as error:
        return [str(error)]
    problems = _runtime_env_secrets(job)
    cluster = cluster_spec(job)
    head = ray_containers(cluster)[:1]
    if not head:
        return problems
    env, env_problems = pod_environment(head[0], objects)
    problems += env_problems + secrets_from_secrets(stage, head[0])
    if config_path is None:
        return [*problems, "entrypoint: no --config file (every stage here reads /config/<stage>.yaml)"]
    try:
        config = load_mounted_config(stage.config_model(), config_path, overrides, head[0], cluster, objects, env)
    except (ConfigError, ValueError) as error:
        return [*problems, *(f"{stage.name} config: {line}" for line in str(error).splitlines())]
    dumped = config.model_dump(mode="json")
    problems += paths_on_volumes(dumped, cluster)
    problems += urls_name_services([*strings(dumped), *env.values()], objects)
    problems += stage_fits(stage.name, config, cluster)
    return problems


def _runtime_env_secrets(job: dict[str, Any]) -> Problems:
    try:
        env_vars = (yaml.safe_load((job.get("spec") or {}).get("runtimeEnvYAML") or "{}") or {}).get("env_vars") or {}
    except (yaml.YAMLError, AttributeError):
        return []
    return [f"runtimeEnvYAML: {name} is a secret; the dashboard shows the runtime env"
            for name in sorted(set(env_vars) & secret_env_names())]
