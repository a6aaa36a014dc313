"""One real multi-node Ray cluster for tests/multinode: a head (1 CPU) and two worker nodes (2 CPUs
each), started by `cluster.local_cluster` as `socialalign cluster up` starts it, and stopped by the
processes it started at the end of the session. Its environment is the cluster's own: the Redis URL
(a secret: jobs read it there, it never travels with a job), DeepSpeed's compiled op cache, metrics
exported every second.

Helpers read placement from Ray's state API on the head's dashboard (by node id), and submit stages
with `socialalign submit` as a user does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import local_cluster
from tests.conftest import PACKAGES, REPO, VENV_BIN

# The trained and served tiny models, imported here once so that both test modules share one of each
# (a fixture imported into two test modules is built twice, ~50 s each).
from tests.serve.conftest import tiny_models  # noqa: F401, E402
from tests.train_jobs.conftest import base_model, sft_dir, sft_rows, tiny_model, train_env  # noqa: F401, E402

pytestmark = pytest.mark.multinode



@pytest.fixture(scope="session")
def cluster_secrets(redis_url: str) -> dict[str, str]:
    from train_jobs.job import DEFAULT_EXTENSIONS_DIR

    return {
        "SOCIALALIGN_REDIS_URL": redis_url,
        "TORCH_EXTENSIONS_DIR": str(DEFAULT_EXTENSIONS_DIR),
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        "RAY_metrics_report_interval_ms": "1000",
    }


@pytest.fixture(scope="session")
def multinode(cluster_secrets: dict[str, str]) -> Iterator[local_cluster.ClusterState]:
    directory = Path(tempfile.mkdtemp(prefix="sa-multinode-"))
    state = local_cluster.up(directory, workers=2, worker_cpus=2, head_cpus=1, env=cluster_secrets)
    try:
        yield state
    finally:
        local_cluster.down(directory)


@pytest.fixture()
def cluster_env(multinode: local_cluster.ClusterState) -> dict[str, str]:
    """The environment a user's shell has after `socialalign cluster up` (submit reads the token from it)."""
    env = {**os.environ, **multinode.environment, "RAY_USAGE_STATS_ENABLED": "0"}
    return env


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a user's checkout holds: our packages, and configs under configs/ (the working dir submitted)."""
    root = tmp_path_factory.mktemp("multinode-work")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "configs").mkdir()
    return root


def submit(state: local_cluster.ClusterState, work: Path, stage: str, config: dict, *extra: str,
           job_id: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    """`socialalign submit <stage> --config configs/<job_id>.yaml` as a user runs it; waits for the job."""
    import yaml

    path = work / "configs" / f"{job_id}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    env = {**os.environ, **state.environment, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [str(VENV_BIN / "socialalign"), "submit", stage, "--config", f"configs/{job_id}.yaml", "--submission-id",
         job_id, *extra], cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)


def ray_job_id(state: local_cluster.ClusterState, submission_id: str) -> str:
    return local_cluster.dashboard(state, f"/api/jobs/{submission_id}")["job_id"]


def state_rows(state: local_cluster.ClusterState, kind: str, /, **filters: str) -> list[dict]:
    """Rows of Ray's state API (`kind`: actors, tasks, ...) matching every filter (key=value)."""
    query = [("limit", "10000"), ("detail", "1")]
    for key, value in filters.items():
        query += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
    return local_cluster.dashboard(state, f"/api/v0/{kind}?{urllib.parse.urlencode(query)}")["data"]["result"]["result"]


def node_names(state: local_cluster.ClusterState) -> dict[str, str]:
    """Ray node id -> our node name (head, node_1, ...) of every node the cluster has seen, dead ones too."""
    names = {}
    for node in state_rows(state, "nodes"):
        ours = [key for key in node.get("resources_total", {}) if key == "head" or key.startswith("node_")]
        names[node["node_id"]] = ours[0] if ours else node["node_id"][:8]
    return names


def wait_for(condition, what: str, timeout_s: float = 120, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"{what}: not after {timeout_s:.0f}s")


def job_logs(state: local_cluster.ClusterState, job: str) -> str:
    return local_cluster.dashboard(state, f"/api/jobs/{job}/logs")["logs"]


def job_report(output: Path) -> dict:
    return json.loads((output / "_SUCCESS.json").read_text())["report"]
