"""The LLM judge's key never travels in Ray actor arguments: each labelling worker reads it from its
own environment and registers it for redaction; a key given inline in the config reaches the workers
of the local Ray the run starts, and is refused when the run joins a running cluster."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cluster.config import ConfigError, load_config
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.job import labeler_options, run
from tests.dataset_jobs.test_persona_secrets import KEY_ENV, EchoingLLM, files_holding, new_key
from tests.serve.test_evaluation_job import predictions

REPO = Path(__file__).resolve().parents[2]
JUDGE = ["labeler=llm-judge", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=judge-1"]


def test_no_labelling_actor_argument_holds_the_key() -> None:
    key = new_key()
    config = load_config(EvaluateConfig, overrides=JUDGE, environ={"SOCIALALIGN_LLM_API_KEY": key})
    assert config.judge.api_key is not None and config.judge.api_key.get_secret_value() == key
    options = labeler_options(config)
    assert options["endpoint"].api_key is None
    from ray import cloudpickle  # what Ray serialises actor arguments with

    assert key.encode() not in pickle.dumps(options) and key.encode() not in cloudpickle.dumps(options)


def test_an_inline_judge_key_is_refused_when_the_run_joins_a_running_ray(tmp_path: Path, ray_local,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_ENV:
        monkeypatch.delenv(name, raising=False)
    pq.write_table(predictions("pac_lora", good=True), tmp_path / "p.parquet")
    config = EvaluateConfig(predictions=[tmp_path / "p.parquet"], output_dir=tmp_path / "out", labeler="llm-judge",
                            judge={"base_url": "http://127.0.0.1:9/v1", "model": "j", "api_key": new_key()},
                            ray={"address": ray_local.address})
    with pytest.raises(ConfigError, match="judge.api_key: the key is given in the config, but the labelling workers"):
        run(config)
    assert not any(os.environ.get(name) for name in KEY_ENV)  # what it put in the environment is gone again


def test_each_labelling_worker_sends_the_key_it_read_and_no_file_holds_it(tmp_path: Path) -> None:
    key = new_key()
    ray_dir = Path(tempfile.mkdtemp(prefix="sa-judge-", dir="/tmp"))  # Ray's socket paths must stay short
    pq.write_table(predictions("pac_lora", good=True), tmp_path / "p.parquet")
    with EchoingLLM().running() as llm:
        config = {"predictions": [str(tmp_path / "p.parquet")], "output_dir": str(tmp_path / "out"),
                  "labeler": "llm-judge", "judge": {"base_url": llm.base_url, "model": "judge-1", "max_retries": 0},
                  "ray": {"address": "local", "include_dashboard": False, "num_cpus": 2,
                          "object_store_memory_mb": 256}}
        (tmp_path / "evaluate.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        environ = {name: value for name, value in os.environ.items() if name not in (*KEY_ENV, "RAY_ADDRESS")}
        environ.update({"RAY_TMPDIR": str(ray_dir), "SOCIALALIGN_LLM_API_KEY": key})
        done = subprocess.run([sys.executable, "-m", "serve.evaluate", "--config", str(tmp_path / "evaluate.yaml")],
                              cwd=REPO, env=environ, capture_output=True, text=True, timeout=900)
        sent = dict(llm.keys)
    held_by_ray = files_holding(ray_dir, key)
    shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(sent) == {key}  # the workers read it from their environment, not from their arguments
    assert key not in done.stdout + done.stderr
    assert not held_by_ray and not files_holding(tmp_path / "out", key)
