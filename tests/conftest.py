"""Fixtures shared by the whole suite: one local Ray per session, a real Redis, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# Our packages: what a user's checkout holds and what the layering rule checks.
PACKAGES = ("cluster", "crawl_actors", "dataset_jobs", "pac_lora", "train_jobs", "serve")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_local() -> Iterator[object]:
    """One local Ray for every test that needs it, started through the same code path as a stage."""
    import ray

    from cluster.ray_connect import init_ray
    from cluster.stage_config import RayConfig

    info = init_ray(RayConfig(num_cpus=4, include_dashboard=False, object_store_memory_mb=512))
    yield info
    ray.shutdown()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """`.ci/run` passes a running server in SOCIALALIGN_TEST_REDIS_URL; otherwise start one here."""
    given = os.environ.get("SOCIALALIGN_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it; or set SOCIALALIGN_TEST_REDIS_URL)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="socialalign-redis-")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, timeout_s=10)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heavy and GPU-only tests are skipped with the reason stated, unless asked for."""
    run_slow = os.environ.get("SOCIALALIGN_SLOW") == "1"
    has_gpu = _cuda_available() if any(item.get_closest_marker("gpu") for item in items) else False
    for item in items:
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow end-to-end test: set SOCIALALIGN_SLOW=1 to run it"))
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch here"))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
