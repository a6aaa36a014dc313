"""Connecting a stage to Ray: a local Ray sized for this machine, or an existing cluster."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cluster.stage_config import RayConfig

log = logging.getLogger(__name__)

# Ray Data pipelines deadlock when an actor pool takes every CPU, so a small machine gets a few
# more logical CPUs than cores (the tasks still share the real cores).
MIN_LOCAL_CPUS = 4


@dataclass(frozen=True)
class RayInfo:
    address: str
    started_here: bool
    cpus: float
    gpus: float
    dashboard_url: str | None
    log_dir: str | None = None  # this Ray session's logs, workers' too (when this process can see them)


def init_ray(config: RayConfig) -> RayInfo:
    """Start or join Ray as `config` says; reuse the running one if this process already has it."""
    import ray

    if config.address.startswith(("http://", "https://")):
        raise ValueError(f"{config.address} is a dashboard URL: submit the stage as a job (socialalign submit)")
    started_here = False
    if ray.is_initialized():
        context = None
    elif config.address == "local" and not os.environ.get("RAY_ADDRESS"):
        context = ray.init(**local_init_kwargs(config))
        started_here = True
    else:
        address = None if config.address == "local" else config.address  # None: Ray reads RAY_ADDRESS
        context = ray.init(address=address, namespace=config.namespace, log_to_driver=config.log_to_driver)
    info = _describe(context, started_here)
    verb = "started a local Ray" if started_here else "joined Ray at"
    log.info(
        "%s %s: %g CPUs, %g GPUs%s",
        verb,
        info.address,
        info.cpus,
        info.gpus,
        f", dashboard {info.dashboard_url}" if info.dashboard_url else "",
    )
    return info


@contextmanager
def ray_session(config: RayConfig) -> Iterator[RayInfo]:
    """`init_ray`, and on exit shut down only a Ray this call started."""
    import ray

    info = init_ray(config)
    try:
        yield info
    finally:
        if info.started_here:
            ray.shutdown()


def local_init_kwargs(config: RayConfig) -> dict[str, object]:
    kwargs: dict[str, object] = {
        # "local" starts a new Ray even when `ray start` left one running on this machine.
        "address": "local",
        "num_cpus": config.num_cpus or max(MIN_LOCAL_CPUS, os.cpu_count() or 1),
        "namespace": config.namespace,
        "include_dashboard": config.include_dashboard,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": config.dashboard_port,
        "log_to_driver": config.log_to_driver,
    }
    if config.num_gpus is not None:
        kwargs["num_gpus"] = config.num_gpus
    if config.object_store_memory_mb is not None:
        kwargs["object_store_memory"] = config.object_store_memory_mb * 1024 * 1024
    return kwargs


def _describe(context: object | None, started_here: bool) -> RayInfo:
    import ray

    resources = ray.cluster_resources()
    dashboard = getattr(context, "dashboard_url", None) if context is not None else None
    address_info = getattr(context, "address_info", {}) if context is not None else {}
    address = address_info.get("address")
    session_dir = address_info.get("session_dir")
    return RayInfo(
        address=address or ray.get_runtime_context().gcs_address,
        started_here=started_here,
        cpus=resources.get("CPU", 0.0),
        gpus=resources.get("GPU", 0.0),
        dashboard_url=f"http://{dashboard}" if dashboard else None,
        log_dir=f"{session_dir}/logs" if session_dir else None,
    )
