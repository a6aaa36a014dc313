"""Whether a Ray cluster holds what its stage asks for: the actors (CPUs and GPUs each), a CPU left
for Ray Data's tasks, and no GPU that the stage's config never uses."""

from __future__ import annotations

import math
from typing import Any

from cluster.k8s.manifest import GPU, Problems, quantity

RAY_DATA_STAGES = {"build-dataset", "train", "predict", "evaluate"}


def ray_resources(group: dict[str, Any]) -> tuple[float, float]:
    """(CPUs, GPUs) Ray sees on one pod of a group: rayStartParams, else the container's limits (or requests)."""
    params = group.get("rayStartParams") or {}
    container = (((group.get("template") or {}).get("spec") or {}).get("containers") or [{}])[0]
    resources = container.get("resources") or {}
    amounts = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    cpus = float(params["num-cpus"]) if "num-cpus" in params else math.ceil(quantity(amounts.get("cpu", "0")))
    gpus = float(params["num-gpus"]) if "num-gpus" in params else quantity(amounts.get(GPU, "0"))
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


def stage_fits(stage: str, config: Any, cluster: dict[str, Any]) -> Problems:
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
