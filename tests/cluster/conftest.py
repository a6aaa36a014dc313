"""A separate Ray cluster for the job-submission and dashboard-metrics tests: `ray start --head
--block` on loopback with the dashboard and token authentication, as a user's cluster runs."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, free_port


@pytest.fixture(scope="session")
def ray_head() -> Iterator[dict[str, str]]:
    """Shared by tests/cluster (submit and metrics); stopped by its pid at the end of the session."""
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # Ray's socket paths must stay short
    token_path = Path(temp_dir) / "token"
    token_path.write_text(secrets.token_hex(16))
    dashboard, gcs = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Workers report metrics to the node's exporter every second instead of every 10 s.
        "RAY_metrics_report_interval_ms": "1000",
    }
    env.pop("RAY_ADDRESS", None)
    command = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", "--dashboard-host=127.0.0.1",
               "--include-dashboard=true", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    command += [f"{flag}={port}" for flag, port in ports.items()]
    head = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(address, token_path.read_text(), head)
        yield {"address": address, "gcs_address": f"127.0.0.1:{gcs}", "token_path": str(token_path),
               "PATH": env["PATH"], "metrics_export_port": str(ports["--metrics-export-port"])}
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(address: str, token: str, head: subprocess.Popen, timeout_s: float = 90) -> None:
    request = urllib.request.Request(f"{address}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Ray dashboard at {address} did not answer in {timeout_s}s")
