"""The RayService serves what the CLI serves: its serveConfigV2 is serve/serve_config.yaml, and is
what the serve stage's `deploy-config` action (`python -m serve.deploy_config`) writes for the
mounted serve.yaml; that file loads with the stage's model, secrets come from Secrets, the head
container exposes the port as `serve`, paths lie on volumes and the Ray cluster fits the
replicas. With `build_app`, the app is built by the builder serveConfigV2 names, as the Serve
controller will. The serve stage is reached through the registry only."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from cluster.config import ConfigError, parse_override
from cluster.k8s.fit import stage_fits
from cluster.k8s.manifest import Objects, Problems, cluster_spec, name_of, ray_containers
from cluster.k8s.pod_config import (
    load_mounted_config,
    mounted_copy,
    pod_environ,
    pod_environment,
    secrets_from_secrets,
)
from cluster.k8s.targets import paths_on_volumes
from cluster.stages import STAGES, Stage, load

REPO = Path(__file__).resolve().parents[2]
SERVE = STAGES["serve"]
SERVE_CONFIG = REPO / SERVE.module.replace(".", "/") / "serve_config.yaml"
DEPLOY_CONFIG = "deploy-config"  # the serve stage's action that writes a Serve config file


class HeadPod(NamedTuple):
    """The RayService's head pod as the render makes it."""

    container: dict[str, Any]
    cluster: dict[str, Any]  # the Ray cluster spec
    objects: Objects  # the whole render (its ConfigMaps and Secrets)
    env: dict[str, str]  # the container's environment, resolved


def check_serve(objects: Objects, build_app: bool = False) -> Problems:
    problems = []
    for service in (o for o in objects if o.get("kind") == "RayService"):
        problems += [f"{name_of(service)}: {p}" for p in _check_rayservice(service, objects, build_app)]
    return problems


def _check_rayservice(service: dict[str, Any], objects: Objects, build_app: bool) -> Problems:
    try:
        document = yaml.safe_load(service["spec"].get("serveConfigV2") or "")
    except yaml.YAMLError:
        return []  # reported by check_kuberay_rules
    problems = []
    if document != yaml.safe_load(SERVE_CONFIG.read_text(encoding="utf-8")):
        problems.append("serveConfigV2 differs from serve/serve_config.yaml (the Serve config the CLI uses)")
    apps = (document or {}).get("applications") or []
    if len(apps) != 1 or not apps[0].get("import_path"):
        return [*problems, "serveConfigV2: expected one application, named by the import_path of its builder"]
    args = apps[0].get("args") or {}
    cluster = cluster_spec(service)
    head = ray_containers(cluster)[0]
    env, env_problems = pod_environment(head, objects)
    pod = HeadPod(head, cluster, objects, env)
    problems += env_problems + secrets_from_secrets(SERVE, head)
    config_path, overrides = str(args.get("config")), list(args.get("overrides") or [])
    try:
        for item in overrides:
            parse_override(item)
        config = load_mounted_config(SERVE.config_model(), config_path, overrides, head, cluster, objects, env)
    except (ConfigError, ValueError) as error:
        return [*problems, *(f"{SERVE.name} config: {line}" for line in str(error).splitlines())]
    expected, failure = deploy_config_document(SERVE, config_path, overrides, pod)
    if failure:
        problems.append(failure)
    elif expected != document:
        problems.append(f"serveConfigV2 is not what `{_deploy_command(SERVE)}` writes for the mounted serve.yaml "
                        "(host, port, app name or builder differ)")
    serve_ports = {p.get("containerPort") for p in head.get("ports") or [] if p.get("name") == "serve"}
    if config.port not in serve_ports:
        problems.append(f"{SERVE.name}: port {config.port} is not the head container's `serve` port "
                        f"{sorted(serve_ports)}")
    problems += paths_on_volumes(config.model_dump(mode="json"), cluster)
    problems += stage_fits(SERVE.name, config, cluster)
    if build_app and expected is not None and _builder(expected) == apps[0]["import_path"]:
        problems += _build_app(apps[0]["import_path"], args, pod)
    return problems


def deploy_config_document(stage: Stage, config_path: str, overrides: list[str],
                           pod: HeadPod) -> tuple[dict[str, Any] | None, str | None]:
    """(the Serve config the stage's deploy-config action writes for the file mounted at `config_path`,
    None) — run on a local copy of that file with the pod's environment, as a user runs
    `python -m serve.deploy_config --config serve.yaml --path /config/serve.yaml key=value...`;
    (None, why) when it fails."""
    written, errors = io.StringIO(), io.StringIO()
    with mounted_copy(config_path, pod.container, pod.cluster, pod.objects) as copy, pod_environ(pod.env):
        with redirect_stdout(written), redirect_stderr(errors):
            try:
                code = stage.load_action(DEPLOY_CONFIG)(["--config", str(copy), "--path", config_path, *overrides])
            except SystemExit as exit_:  # argparse refuses its arguments
                code = exit_.code
    if code:
        return None, f"`{_deploy_command(stage)}` failed (exit {code}): {errors.getvalue().strip()}"
    return yaml.safe_load(written.getvalue()), None


def _deploy_command(stage: Stage) -> str:
    return f"python -m {stage.actions[DEPLOY_CONFIG].partition(':')[0]}"


def _builder(document: dict[str, Any]) -> str | None:
    apps = document.get("applications") or [{}]
    return apps[0].get("import_path")


def _build_app(import_path: str, args: dict[str, Any], pod: HeadPod) -> Problems:
    """Run the builder on the mounted serve.yaml, as the Serve controller will."""
    from ray.serve import Application

    with mounted_copy(str(args["config"]), pod.container, pod.cluster, pod.objects) as copy, pod_environ(pod.env):
        try:
            app = load(import_path)({**args, "config": str(copy)})
        except Exception as error:  # whatever the builder raises is the finding
            return [f"{import_path} failed: {error}"]
    return [] if isinstance(app, Application) else [f"{import_path} returned {type(app).__name__}"]
