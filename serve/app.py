"""`socialalign serve`: the Ray Serve application, built from one `ServeConfig` for every way it runs.

- `socialalign serve --config serve.yaml` (and `python -m serve`, `ray job submit ... -- python -m
  serve`) calls `run`: start or join Ray, start Serve's HTTP proxy on config.host:port, deploy,
  serve until Ctrl-C or SIGTERM, then take the application down.
- A Serve config file (`serve deploy`, KubeRay RayService `serveConfigV2`) names
  `serve.app:app_builder` with `args: {config: <the same serve.yaml>}`; the builder loads it
  through the same loader as the CLI (YAML < SOCIALALIGN_SERVE_TOKEN < overrides) and calls the
  same `build_app`. `python -m serve.deploy_config` writes that file from a ServeConfig.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from ray import serve as ray_serve
from ray.serve import Application

from cluster.config import ConfigError, load_config
from cluster.logs import setup_logging
from cluster.ray_connect import ray_session
from pac_lora import PAC_CONFIG_FILE, PEFT_CONFIG_FILE, adapter_format
from serve.config import ServeConfig
from serve.generator import Generator
from serve.ingress import Api

log = logging.getLogger(__name__)

BUILDER = "serve.app:app_builder"


def build_app(config: ServeConfig) -> Application:
    """The Generator (model) deployment behind the Api (HTTP ingress) deployment, sized by `config`.
    Raises ConfigError for a server other machines could reach without a token."""
    check_exposure(config)
    token = config.auth_token.get_secret_value() if config.auth_token else None
    token_sha256 = hashlib.sha256(token.encode("utf-8")).hexdigest() if token else None
    public = config.model_copy(update={"auth_token": None})  # the token itself never leaves this process
    generator = Generator.options(
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        ray_actor_options={"num_cpus": config.replica_cpus, "num_gpus": config.replica_gpus},
        max_replicas_per_node=config.max_replicas_per_node,
    ).bind(public)
    return Api.options(
        num_replicas=config.api_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests,
        # Not 0: a replica that asks for no CPU may land on a head node started with num-cpus 0,
        # and the ingress reads every request body.
        ray_actor_options={"num_cpus": config.api_cpus},
    ).bind(generator, public, token_sha256)


def app_builder(args: dict[str, Any]) -> Application:
    """Serve config entry: `args: {config: serve.yaml, overrides: [key=value, ...]}`, both optional."""
    unknown = sorted(set(args) - {"config", "overrides"})
    if unknown:
        raise ValueError(f"{BUILDER}: unknown args {unknown}; expected config (a serve YAML path) and overrides")
    overrides = args.get("overrides") or []
    if isinstance(overrides, str) or not all(isinstance(item, str) for item in overrides):
        raise ValueError(f"{BUILDER}: overrides must be a list of 'key=value' strings")
    config = load_config(ServeConfig, args.get("config"), overrides)
    setup_logging(config.log_level)
    return build_app(config)


def serve_config_document(
    config: ServeConfig, config_path: str, overrides: list[str] | None = None
) -> dict[str, Any]:
    """A Serve config (for `serve deploy` or a RayService's serveConfigV2) that builds `config` from `config_path`."""
    args: dict[str, Any] = {"config": config_path}
    if overrides:
        args["overrides"] = list(overrides)
    return {
        "proxy_location": config.proxy_location,
        "http_options": {"host": config.host, "port": config.port},
        "applications": [
            {"name": config.app_name, "route_prefix": "/", "import_path": BUILDER, "args": args},
        ],
    }


def deploy(config: ServeConfig) -> str:
    """Start Serve's proxy on config.host:port (Ray must be up) and deploy the app; returns its base URL."""
    ray_serve.start(http_options={"host": config.host, "port": config.port}, proxy_location=config.proxy_location)
    ray_serve.run(build_app(config), name=config.app_name, route_prefix="/", blocking=False)
    host, port = proxy_address(config.host, config.port)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def proxy_address(wanted_host: str, wanted_port: int) -> tuple[str, int]:
    """Where Serve's HTTP proxy really listens. Serve fixes its HTTP options when it first starts on
    a cluster, so on a cluster that already runs Serve the app answers on that proxy, not on ours."""
    from ray.serve.context import _get_global_client  # no public API reads the running proxy's options

    try:
        options = _get_global_client().http_config
        host, port = options.host, options.port
    except Exception as error:  # a Serve version without it: say what was asked for
        log.debug("cannot read Serve's HTTP options (%s); assuming %s:%d", error, wanted_host, wanted_port)
        return wanted_host, wanted_port
    if (host, port) != (wanted_host, wanted_port):
        log.warning("Serve was already running on this cluster with its proxy on %s:%d, so the app is served "
                    "there, not on %s:%d (Serve's HTTP options are fixed when it first starts)",
                    host, port, wanted_host, wanted_port)
    return host, port


def run(config: ServeConfig) -> int:
    """The stage entry point: deploy, serve until interrupted, then delete the app (and a Ray started here).
    Raises ConfigError, before Ray starts, when a model or adapter directory is missing."""
    problems = missing_paths(config)
    if problems:
        raise ConfigError("\n".join(problems))
    check_exposure(config)
    with ray_session(config.ray) as ray_info:
        url = deploy(config)
        models = ", ".join([config.base_model_id, *config.adapters])
        print(
            f"serving {models} at {url} (OpenAPI: {url}/docs, OpenAI base_url: {url}/v1); Ctrl-C to stop",
            flush=True,
        )
        try:
            wait_for_stop()
        finally:
            log.info("stopping: deleting the %s application", config.app_name)
            ray_serve.delete(config.app_name)
            if ray_info.started_here:
                ray_serve.shutdown()
    return 0


def check_exposure(config: ServeConfig) -> None:
    """Serving without a token is for this machine only: on any other host, refuse to start."""
    if config.auth_token is None and not is_loopback(config.host):
        raise ConfigError(
            f"host: {config.host} lets other machines reach the API, so it needs a bearer token: set "
            "SOCIALALIGN_SERVE_TOKEN to a random string (e.g. `openssl rand -hex 32`), or serve on 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def missing_paths(config: ServeConfig) -> list[str]:
    """Model and adapter directories that are not there, checked before any replica starts."""
    problems = []
    if not (Path(config.base_model) / "config.json").is_file():
        problems.append(f"base_model: {config.base_model} is not a local model directory (no config.json)")
    for adapter_id, directory in config.adapters.items():
        if adapter_format(directory) is None:
            problems.append(f"adapters.{adapter_id}: {directory} holds no adapter (neither a PAC-LoRA "
                            f"{PAC_CONFIG_FILE} nor a peft LoRA {PEFT_CONFIG_FILE})")
    return problems


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (a RayJob being stopped, a pod being deleted)."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
