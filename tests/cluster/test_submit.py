"""`socialalign submit`: the job it builds, Ray's token auth, and a real job on a real `ray start --head`."""

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

from cluster.config import ConfigError
from cluster.stages import STAGES
from cluster.submit import UPLOAD_EXCLUDES, SubmitError, auth_token, build_job
from tests.conftest import REPO, VENV_BIN, free_port

PACKAGES = ("cluster", "crawl_actors", "dataset_jobs", "pac_lora", "train_jobs", "serve")


def test_job_runs_the_stage_module_with_the_config_relative_to_the_working_dir(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text("method: lora\n")
    spec = build_job(STAGES["train"], str(tmp_path / "configs" / "train.yaml"), ["epochs=1"], tmp_path)
    assert spec.entrypoint == "python -m train_jobs --config configs/train.yaml epochs=1 ray.address=auto"
    assert spec.runtime_env["working_dir"] == str(tmp_path.resolve())
    assert set(UPLOAD_EXCLUDES) <= set(spec.runtime_env["excludes"]) and ".venv" in UPLOAD_EXCLUDES
    assert spec.metadata == {"socialalign_stage": "train"}


def test_overrides_with_spaces_are_quoted_for_the_shell(tmp_path: Path) -> None:
    spec = build_job(STAGES["build-dataset"], None, ["exclusion_words=[抽奖, 转发 抽奖]"], tmp_path)
    assert spec.entrypoint == "python -m dataset_jobs 'exclusion_words=[抽奖, 转发 抽奖]' ray.address=auto"


def test_config_outside_the_working_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "train.yaml"
    outside.write_text("epochs: 1\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(SubmitError, match="outside the working dir"):
        build_job(STAGES["train"], str(outside), [], tmp_path / "work")


def test_a_secret_never_goes_on_the_job_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth_token=\*\*\*.*set SOCIALALIGN_SERVE_TOKEN in the cluster"):
        build_job(STAGES["serve"], None, ["auth_token=letmein-please"], tmp_path)


def test_a_bad_config_fails_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zero_stage: expected 2 or 3"):
        build_job(STAGES["train"], None, ["zero_stage=1"], tmp_path)


def test_auth_token_is_found_where_ray_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("token-in-home\n")
    assert auth_token() == "token-in-home"
    (tmp_path / "elsewhere").write_text("token-in-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert auth_token() == "token-in-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "token-in-env")
    assert auth_token() == "token-in-env"


@pytest.fixture(scope="module")
def ray_head() -> Iterator[dict[str, str]]:
    """A separate Ray cluster from `ray start --head --block`, with token auth; stopped by its pid."""
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # Ray's socket paths must stay short
    token_path = Path(temp_dir) / "token"
    token_path.write_text(secrets.token_hex(16))
    dashboard = free_port()
    ports = {
        "--port": free_port(),
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
        yield {"address": address, "token_path": str(token_path), "PATH": env["PATH"]}
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


@pytest.fixture()
def working_dir(tmp_path: Path) -> Path:
    """What a user's checkout holds: the packages and a stage config."""
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("size: smoke\nout: demo-from-job\n")
    return tmp_path


def submit(ray_head: dict[str, str], cwd: Path, *args: str, token_path: str | None = None):
    env = {**os.environ, "PATH": ray_head["PATH"], "RAY_AUTH_TOKEN_PATH": token_path or ray_head["token_path"]}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    return subprocess.run(
        [str(VENV_BIN / "socialalign"), "submit", *args, "--address", ray_head["address"]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_submitted_stage_runs_on_the_cluster_with_its_config(ray_head, working_dir: Path) -> None:
    result = submit(ray_head, working_dir, "demo", "--config", "configs/demo.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "python -m cluster.demo --config configs/demo.yaml ray.address=auto" in output
    assert "a task ran on" in output  # the job's own output, streamed back
    assert "joined Ray at" in output  # it joined the cluster instead of starting its own
    assert "size=smoke, out=" in output and "demo-from-job" in output
    assert "[crawl        ] ok:" in output  # the stages that exist ran in the job
    assert "SUCCEEDED" in output
    assert open(ray_head["token_path"]).read() not in output


def test_a_failing_job_fails_the_command_and_shows_why(ray_head, working_dir: Path) -> None:
    result = submit(ray_head, working_dir, "train")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "python -m train_jobs: not implemented yet" in output
    assert "ended FAILED" in output


def test_a_wrong_token_is_refused_with_a_clear_message(ray_head, working_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 32)
    result = submit(ray_head, working_dir, "demo", token_path=str(wrong))
    assert result.returncode == 1
    assert "Invalid authentication token" in result.stderr
    assert "0" * 32 not in result.stderr
