"""The persona endpoint's key never travels in Ray task or actor arguments: each persona worker reads
it from its own environment and registers it for redaction, so an endpoint that echoes the key in
its error message leaves it masked in the worker's log, Ray's log files and the persona table."""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from cluster.config import ConfigError, load_config
from cluster.parquet import read_table_dir
from cluster.schemas import PERSONAS
from dataset_jobs.config import DatasetConfig
from dataset_jobs.job import run
from dataset_jobs.steps.persona import PersonaWorker, worker_arguments
from tests.fakes.openai_server import FakeLLM

REPO = Path(__file__).resolve().parents[2]
KEY_ENV = ("SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY")


class EchoingLLM(FakeLLM):
    """An endpoint that refuses every key and says which one it was given, as real providers do."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: Counter = Counter()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            self.keys[key] += 1
        return web.json_response({"error": {"message": f"Incorrect API key provided: {key}. Check your key."}},
                                 status=401)


def new_key() -> str:
    return "sk-test-" + secrets.token_hex(16)


def test_no_actor_argument_holds_the_key(tmp_path: Path) -> None:
    key = new_key()
    config = load_config(DatasetConfig, overrides=["persona.base_url=http://127.0.0.1:9/v1", "persona.model=m"],
                         environ={"SOCIALALIGN_LLM_API_KEY": key})
    assert config.persona.api_key is not None and config.persona.api_key.get_secret_value() == key
    arguments = worker_arguments(config, tmp_path)
    assert arguments["endpoint"].api_key is None and arguments["key_expected"] is True
    assert key.encode() not in pickle.dumps(arguments)
    from ray import cloudpickle  # what Ray serialises actor arguments with

    assert key.encode() not in cloudpickle.dumps(arguments)
    assert config.persona.api_key.get_secret_value() == key  # the config itself still has it


def test_a_worker_without_the_key_the_job_has_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    config = DatasetConfig(persona={"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": new_key()})
    arguments = worker_arguments(config, tmp_path)
    with pytest.raises(RuntimeError, match="this Ray worker's environment has none: set SOCIALALIGN_LLM_API_KEY"):
        PersonaWorker(**arguments)
    monkeypatch.setenv("OPENAI_API_KEY", new_key())
    PersonaWorker(**arguments)  # any key in its environment will do: it is the one the worker can send


def test_an_inline_key_is_refused_when_the_job_joins_a_running_ray(crawl_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, ray_local) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    config = DatasetConfig(crawl_dir=crawl_dir, output_dir=tmp_path / "out", steps=["persona"],
                           ray={"address": ray_local.address},
                           persona={"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key": new_key()})
    with pytest.raises(ConfigError, match="persona.api_key: the key is given in the config, but the persona workers"):
        run(config)
    assert not any(os.environ.get(name) for name in KEY_ENV)  # what it put in the environment is gone again


@pytest.fixture(scope="module")
def short_tmp() -> Path:
    """Ray's socket paths must stay short: a directory under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sa-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stage(config: dict, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m dataset_jobs` as its user runs it: its own local Ray (logs under work/ray), `env` added."""
    (work / "configs").mkdir(exist_ok=True)
    path = work / "configs" / f"dataset-{secrets.token_hex(4)}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    environ = {name: value for name, value in os.environ.items() if name not in (*KEY_ENV, "RAY_ADDRESS")}
    environ.update({"RAY_TMPDIR": str(work / "ray"), **env})
    return subprocess.run([sys.executable, "-m", "dataset_jobs", "--config", str(path)], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=900)


def files_holding(root: Path, text: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if text.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def test_a_key_the_endpoint_echoes_is_masked_in_worker_logs_and_tables(crawl_dir: Path, short_tmp: Path) -> None:
    key, inline = new_key(), new_key()
    out = short_tmp / "dataset"
    with EchoingLLM().running() as llm:
        base = {"crawl_dir": str(crawl_dir), "output_dir": str(out),
                "ray": {"address": "local", "include_dashboard": False, "num_cpus": 4, "object_store_memory_mb": 256},
                "persona": {"base_url": llm.base_url, "model": "fake-persona-1", "max_retries": 0}}
        # the key in the environment, as a cluster's pods have it
        done = stage({**base, "steps": ["clean", "persona"]}, short_tmp, {"SOCIALALIGN_LLM_API_KEY": key})
        assert done.returncode == 0, done.stderr[-3000:]
        from_env = dict(llm.keys)
        # the key inline in the YAML, no environment: the local Ray this run starts inherits it
        again = stage({**base, "steps": ["persona"], "force": True,
                       "persona": {**base["persona"], "api_key": inline}}, short_tmp, {})
        assert again.returncode == 0, again.stderr[-3000:]
        from_yaml = {name: n for name, n in llm.keys.items() if name not in from_env}
    assert set(from_env) == {key} and set(from_yaml) == {inline}  # each worker sent the key it read
    for secret_value, run_output in ((key, done), (inline, again)):
        assert secret_value not in run_output.stdout + run_output.stderr
        for root in (short_tmp / "ray", out):  # Ray's log files (workers' too); tables, caches, reports
            assert not files_holding(root, secret_value)
    assert "Incorrect API key provided: ***" in done.stderr  # the worker's warning, forwarded by Ray
    worker_logs = [path for path in (short_tmp / "ray").rglob("worker-*") if b"Incorrect API key" in path.read_bytes()]
    assert worker_logs and all(b"Incorrect API key provided: ***" in path.read_bytes() for path in worker_logs)
    personas = read_table_dir(out / "personas", PERSONAS).to_pylist()
    assert personas and all(row["source"] == "offline-fallback" for row in personas)
    assert all(row["error"].startswith("AuthenticationError 401") and "***" in row["error"] for row in personas)
