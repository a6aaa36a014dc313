"""Every stage submitted with `socialalign submit` to the session's three-node cluster (a head and two
worker nodes), with where its work ran read back from Ray's state API by node id, not assumed."""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import requests

from cluster import local_cluster
from cluster.schemas import CRAWL_TABLES
from crawl_actors.simulator import SimulatorConfig, WeiboSimulator
from tests.conftest import free_port
from tests.crawl_actors.test_crawl import RATES, assert_equals_ground_truth
from tests.multinode.conftest import job_logs, job_report, node_names, ray_job_id, state_rows, submit, wait_for

pytestmark = pytest.mark.multinode

WORKER_NODES = {"node_1", "node_2"}


@pytest.fixture(scope="module")
def simulator():
    """A small rate-limited Weibo: every cookie's limit is counted, and a violation fails the test."""
    sim = WeiboSimulator(SimulatorConfig(seed=11, num_users=14, history_posts=(5, 20), hot_topic_posts=60,
                                         topic_posts=20, rates=RATES))
    with sim.running():
        yield sim


def crawl_yaml(sim: WeiboSimulator, output: Path, cookies_file: Path, **overrides: object) -> dict:
    start, end = sim.search_window()
    config = {
        "keywords": [t.query for t in sim.topics()],
        "start": start,
        "end": end,
        "cookies_file": str(cookies_file),  # absolute, outside the working dir: storage the cluster reads
        "cookie_namespace": f"test:multinode:{uuid.uuid4().hex[:8]}",
        "endpoints": {host: sim.base_url for host in ("search", "mobile", "ajax", "ai")},
        "rates": {host: {"rate": limit.rate, "burst": limit.burst} for host, limit in RATES.items()},
        "cooldown_s": 0.2, "cooldown_max_s": 1.0, "max_pause_s": 5.0,
        "history_days": None, "max_posts_per_user": 1000, "max_pages_per_user": 100,
        "num_actors": 4, "actor_cpus": 0.5, "actor_scheduling": "SPREAD", "concurrency_per_actor": 4,
        "request_timeout_s": 5, "lease_s": 10, "flush_interval_s": 0.5,
        "output_dir": str(output),
    }
    config.update(overrides)
    return config


def test_crawl_actors_spread_over_nodes_share_one_cookie_pool(multinode, work, simulator, redis_url,
                                                              tmp_path: Path) -> None:
    (tmp_path / "cookies.txt").write_text("\n".join(simulator.new_cookies(4)) + "\n")
    config = crawl_yaml(simulator, tmp_path / "crawl", tmp_path / "cookies.txt")
    before = simulator.stats()["violations"]
    job = f"mn-crawl-{secrets.token_hex(3)}"
    result = submit(multinode, work, "crawl", config, job_id=job)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = node_names(multinode)
    actors = [a for a in state_rows(multinode, "actors", job_id=ray_job_id(multinode, job))
              if a["class_name"] == "CrawlActor"]
    placed = Counter(names[a["node_id"]] for a in actors)
    print(f"crawl actors per node: {dict(placed)}")
    assert sum(placed.values()) == 4 and len(placed) >= 2, placed
    # One cookie pool for all of them, in the cluster's Redis (its URL came from the nodes' environment).
    pool_keys = list(redis.Redis.from_url(redis_url).scan_iter(f"{config['cookie_namespace']}*"))
    assert pool_keys, "no cookie-pool state in the cluster's Redis"
    assert simulator.stats()["violations"] == before, "the crawl exceeded a cookie's rate limit"
    assert_equals_ground_truth(simulator, tmp_path / "crawl")


def write_crawl_parts(truth: dict, root: Path, parts: int = 4) -> None:
    """A finished crawl's tables from a simulator's ground truth, each in several files (several blocks)."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    for name in ("topics", "posts", "users", "history"):
        schema = CRAWL_TABLES[name]
        rows = [{**{f: row.get(f) for f in schema.names}, "crawled_at": now} for row in truth[name]]
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(parts):
            chunk = rows[index::parts]
            pq.write_table(pa.Table.from_pylist(chunk, schema=schema), root / name / f"part-{index:03d}.parquet")


def test_build_dataset_runs_ray_data_on_more_than_one_node(multinode, work, tmp_path: Path) -> None:
    sim = WeiboSimulator(SimulatorConfig(seed=3, num_users=30, history_posts=(8, 40), hot_topic_posts=60,
                                         topic_posts=30, num_topics=4))
    write_crawl_parts(sim.ground_truth(), tmp_path / "crawl")
    job = f"mn-dataset-{secrets.token_hex(3)}"
    # The clean step alone: every step reads its input into Ray Data's minimum of 200 blocks per file
    # set (760 tasks per shuffle here, however small the data), so the four steps take minutes on two
    # shared cores; clean (read, judge, shuffle by user, write) shows the placement.
    result = submit(multinode, work, "build-dataset", {"crawl_dir": str(tmp_path / "crawl"),
                                                       "output_dir": str(tmp_path / "dataset"),
                                                       "steps": ["clean"]}, job_id=job)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert job_report(tmp_path / "dataset" / "clean")["history_rows_in"] > 0
    names = node_names(multinode)
    tasks = [t for t in state_rows(multinode, "tasks", job_id=ray_job_id(multinode, job))
             if t.get("type") == "NORMAL_TASK" and t.get("node_id")]
    placed = Counter(names.get(t["node_id"], "?") for t in tasks)
    print(f"build-dataset Ray Data tasks per node: {dict(placed)}")
    assert len(placed) > 1, placed


def train_yaml(model: Path, sft: Path, output: Path, **overrides: object) -> dict:
    config = {
        "base_model": str(model), "sft_path": str(sft), "output_dir": str(output),
        "num_workers": 2, "placement_strategy": "STRICT_SPREAD", "zero_stage": 2,
        "resources_per_worker": {"CPU": 1},
        "micro_batch_size": 2, "effective_batch_size": 8, "max_steps": 10, "learning_rate": 1e-2,
        "max_length": 512, "checkpoint_every_steps": 2, "log_every_steps": 2, "keep_checkpoints": 2,
    }
    config.update(overrides)
    return config


def train_workers_by_node(state, job: str) -> Counter:
    names = node_names(state)
    actors = [a for a in state_rows(state, "actors", job_id=ray_job_id(state, job))
              if a["class_name"].endswith("RayTrainWorker")]
    return Counter(names[a["node_id"]] for a in actors)


def test_train_puts_one_deepspeed_worker_on_each_node(multinode, work, train_env, base_model, sft_dir,
                                                     tmp_path: Path) -> None:
    storage = tmp_path / "shared-storage"  # what every node reads: on one machine, a shared directory
    job = f"mn-train-{secrets.token_hex(3)}"
    config = train_yaml(base_model, sft_dir, tmp_path / "train", storage_path=str(storage))
    result = submit(multinode, work, "train", config, job_id=job)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    placed = train_workers_by_node(multinode, job)
    print(f"train workers per node: {dict(placed)}")
    assert len(placed) == 2 and set(placed.values()) == {1}, placed  # two nodes, one worker each
    report = job_report(tmp_path / "train" / "pac_lora-full")
    assert report["steps"] == 10
    assert math.isfinite(report["first_loss"]) and math.isfinite(report["final_loss"])
    assert report["final_loss"] < report["first_loss"], report
    checkpoints = sorted((storage / "pac_lora-full").glob("checkpoint_*"))
    assert checkpoints, f"no checkpoint in the shared storage {storage}"
    assert "ZeRO-2" in result.stdout + result.stderr


def serve_yaml(models, port: int, **overrides: object) -> dict:
    config = {
        "base_model": str(models.base),
        "adapters": {name: str(path) for name, path in models.adapters.items() if name != "lora"},
        "default_model": "alpha", "app_name": "multinode", "port": port,
        "num_replicas": 2, "max_replicas_per_node": 1, "replica_cpus": 1, "api_cpus": 0.25,
        "proxy_location": "HeadOnly",  # the nodes share this machine, so one host:port
        "max_batch_size": 4, "max_ongoing_requests": 8, "max_queued_requests": 64,
        "max_new_tokens_limit": 16, "decoding": {"max_new_tokens": 4},
        "labeler": "placeholder-unlabelled",
    }
    config.update(overrides)
    return config


def micro(model: str) -> dict:
    return {"model": model, "user": {"name": "小明", "history": ["今天天气很好"]}, "news": "北京今天晴",
            "topic": "天气"}


def start_serving(multinode, work, models, tmp_path: Path, **overrides: object) -> tuple[str, str]:
    """`socialalign submit serve --no-wait`; returns (job id, base URL) once two replicas are up."""
    port = free_port()
    job = f"mn-serve-{secrets.token_hex(3)}"
    result = submit(multinode, work, "serve", serve_yaml(models, port, **overrides), "--no-wait", job_id=job)
    assert result.returncode == 0, result.stderr[-3000:]
    # Where the job says it serves: Serve fixes its proxy's port when it first starts on a cluster, so after an
    # earlier serve job the app answers on that port, not on this one (the stage warns and names it).
    url = wait_for(lambda: (found := re.search(r"serving .* at (http://\S+) \(OpenAPI", job_logs(multinode, job)))
                   and found[1], "the serve job to say where it serves", timeout_s=240)
    wait_for(lambda: _healthy(url), "the served app to answer /healthz", timeout_s=240)
    wait_for(lambda: running_generators(multinode) == 2, "two Generator replicas RUNNING", timeout_s=240)
    return job, url


def running_generators(state) -> int:
    """Generator replicas Serve counts RUNNING (an actor is ALIVE well before its replica has loaded the model
    and takes requests)."""
    try:
        apps = local_cluster.dashboard(state, "/api/serve/applications/")["applications"]
        replicas = apps["multinode"]["deployments"]["Generator"]["replicas"]
    except (KeyError, OSError, ValueError):
        return 0
    return sum(1 for replica in replicas if replica.get("state") == "RUNNING")


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def generator_replicas(state) -> dict[str, str]:
    """Ray actor name -> our node name of every live Generator replica."""
    names = node_names(state)
    return {a["name"]: names[a["node_id"]] for a in state_rows(state, "actors", state="ALIVE")
            if a["class_name"].startswith("ServeReplica:") and a["class_name"].endswith(":Generator")}


def stop_job(state, job: str) -> None:
    local_cluster.dashboard(state, f"/api/jobs/{job}/stop", method="POST")
    wait_for(lambda: local_cluster.dashboard(state, f"/api/jobs/{job}")["status"] in ("STOPPED", "SUCCEEDED", "FAILED"),
             f"job {job} to stop", timeout_s=60)


def test_serve_two_replicas_on_two_nodes_then_predict_and_evaluate(multinode, work, tiny_models, sft_dir,
                                                                   tmp_path: Path) -> None:
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    job, url = start_serving(multinode, work, tiny_models, tmp_path)
    try:
        replicas = generator_replicas(multinode)
        print(f"Generator replicas: {replicas}")
        assert sorted(replicas.values()) == sorted(set(replicas.values())) and set(replicas.values()) <= {
            "head", *WORKER_NODES} and len(set(replicas.values())) == 2
        # Concurrent requests, more than one replica takes at once (max_ongoing_requests 8): Serve routes an
        # adapter's requests to the replica that holds it, and the overflow to the other, which loads it too.
        with ThreadPoolExecutor(12) as pool:
            statuses = Counter(pool.map(lambda i: requests.post(
                f"{url}/v1/predict/micro", json=micro(("alpha", "beta", "base")[i % 3]), timeout=120).status_code,
                range(72)))
        assert statuses == Counter({200: 72}), statuses
        # Per replica, from Ray Serve's own request log on its node, and our log line of each adapter load.
        answered = wait_for(lambda: _both(calls_per_replica(multinode, replicas)), "both replicas answering", 30)
        loads = adapter_loads_per_node(multinode, since)
        print(f"Generator calls per replica: {answered}; adapters loaded per node: {loads}")
        assert all(loads.get(node) for node in replicas.values()), loads
        # predict and evaluate, each a job, through the served app.
        predictions = tmp_path / "predictions" / "pac_lora.parquet"
        result = submit(multinode, work, "predict", {
            "test_path": str(sft_dir / "test"), "endpoint": url, "model": "alpha", "output_path": str(predictions),
            "max_rows": 6, "batch_size": 4, "decoding": {"max_new_tokens": 4}, "max_length": None,
        }, job_id=f"mn-predict-{secrets.token_hex(3)}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert pq.read_table(predictions).num_rows > 0
        result = submit(multinode, work, "evaluate", {
            "predictions": [str(predictions)], "output_dir": str(tmp_path / "evaluation"),
            "labeler": "placeholder-unlabelled",
        }, job_id=f"mn-evaluate-{secrets.token_hex(3)}")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert (tmp_path / "evaluation" / "_SUCCESS.json").is_file()
    finally:
        stop_job(multinode, job)


def _node_logs(state, node: str) -> Path:
    """The logs folder of `node`'s Ray session (the head's in the cluster's temp dir, a worker's in its own)."""
    # A worker's newest folder: a node restarted after a fault gets a new one.
    root = Path(state.temp_dir) if node == "head" else max(Path(state.temp_dir).glob(f"{node}-*"),
                                                         key=lambda path: path.stat().st_mtime)
    return root / "session_latest" / "logs"


def calls_per_replica(state, replicas: dict[str, str]) -> dict[str, int]:
    """Generator replica -> the calls it answered, counted in Ray Serve's access log of that replica."""
    counts = {}
    for name, node in replicas.items():
        replica_id = name.rsplit("#", 1)[-1]
        logs = list((_node_logs(state, node) / "serve").glob(f"replica_*_Generator_{replica_id}.log"))
        text = "".join(path.read_text(errors="replace") for path in logs)
        counts[f"{replica_id}@{node}"] = text.count("CALL generate OK")
    return counts


def adapter_loads_per_node(state, since: str) -> dict[str, list[str]]:
    """Node -> the adapters a Generator there loaded since `since` (our log line, in that node's worker logs,
    which begins with its local time)."""
    found = {}
    for node in state.nodes:
        text = "".join(p.read_text(errors="replace") for p in _node_logs(state, node.name).glob("worker-*.err"))
        found[node.name] = sorted({match[2] for match in re.finditer(
            r"^(\S+ \S+) .*adapter (\w+) loaded from", text, re.MULTILINE) if match[1] >= since})
    return found


def _both(counts: dict[str, int]) -> dict[str, int] | None:
    return counts if counts and all(value > 0 for value in counts.values()) else None
