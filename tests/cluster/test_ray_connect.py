"""The Ray connection every stage uses, on the suite's one local Ray."""

from __future__ import annotations

import pytest

from cluster.ray_connect import MIN_LOCAL_CPUS, init_ray, local_init_kwargs, ray_session
from cluster.stage_config import RayConfig


def test_local_ray_is_sized_for_a_small_machine() -> None:
    kwargs = local_init_kwargs(RayConfig())
    assert kwargs["address"] == "local"  # a new Ray, never one left running by `ray start`
    assert kwargs["num_cpus"] >= MIN_LOCAL_CPUS
    assert kwargs["object_store_memory"] == 2048 * 1024 * 1024
    assert kwargs["dashboard_host"] == "127.0.0.1"
    assert "num_gpus" not in kwargs
    explicit = local_init_kwargs(RayConfig(num_cpus=2, num_gpus=1, object_store_memory_mb=None))
    assert (explicit["num_cpus"], explicit["num_gpus"]) == (2, 1)
    assert "object_store_memory" not in explicit


def test_dashboard_url_is_for_job_submission_not_for_init() -> None:
    with pytest.raises(ValueError, match="dashboard URL: submit the stage as a job"):
        init_ray(RayConfig(address="http://127.0.0.1:8265"))


def test_a_running_ray_is_reused_and_left_running(ray_local) -> None:
    import ray

    with ray_session(RayConfig(address="auto")) as info:
        assert info.started_here is False
        assert info.cpus == 4
        assert ray.get(ray.remote(lambda: 6 * 7).remote()) == 42
    assert ray.is_initialized()
