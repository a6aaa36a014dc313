"""Scaling out: the crawl and the train stage on one worker node against two, with the same total
logical CPUs, each submitted with `socialalign submit` to a real local Ray cluster
(`cluster.local_cluster`, as `socialalign cluster up` starts it).

Shapes: `1x4` is a head (0 CPUs: it only runs the job drivers) and one worker node with 4 logical
CPUs; `2x2` the head and two worker nodes with 2 each. Both run:
- crawl: the local Weibo simulator (rate-limited per cookie, 4 cookies) crawled by 4 actors
  (0.5 CPU each, `actor_scheduling: SPREAD`) sharing one Redis cookie pool and frontier;
  figures: the stage's own seconds and requests/s, the simulator's violations (must be 0);
- train: PAC-LoRA on the synthetic SFT set, 2 Ray Train workers (1 CPU each, `placement_strategy:
  SPREAD`: one per node where there are two), DeepSpeed ZeRO-2 over gloo, `--steps` steps;
  figures: tokens/s inside the optimizer steps and the run's wall time.

On one machine the nodes share its cores, memory and loopback network, so this measures what the
extra raylets, object stores and cross-node hops cost, not what a second machine adds: a ratio near
1 says scaling out costs little; it cannot show a speed-up that needs more hardware.

Last line: one JSON object, ratios first (2x2 / 1x4: time ratios above 1 mean two nodes are slower).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import yaml  # noqa: E402

from cluster import local_cluster  # noqa: E402

SHAPES = {"1x4": (1, 4.0), "2x2": (2, 2.0)}
PACKAGES = ("cluster", "crawl_actors", "dataset_jobs", "pac_lora", "train_jobs", "serve")
HOSTS = ("search", "mobile", "ajax", "ai")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(directory)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start")


def submit(state: local_cluster.ClusterState, work: Path, stage: str, config: dict[str, Any], name: str) -> float:
    """Submit, wait; returns the wall seconds of the whole job (submission to its end)."""
    (work / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    env = {**os.environ, **state.environment}
    began = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "socialalign"), "submit", stage, "--config",
                             f"configs/{name}.yaml"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{stage} job failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.monotonic() - began


def crawl_config(sim: Any, rates: dict[str, Any], output: Path, cookies_file: Path, namespace: str) -> dict[str, Any]:
    start, end = sim.search_window()
    return {
        "keywords": [t.query for t in sim.topics()],
        "start": start, "end": end,
        "cookies_file": str(cookies_file), "cookie_namespace": namespace,
        "endpoints": {host: sim.base_url for host in HOSTS},
        "rates": {host: {"rate": limit.rate, "burst": limit.burst} for host, limit in rates.items()},
        "history_days": None, "max_posts_per_user": 1000, "max_pages_per_user": 100,
        "num_actors": 4, "actor_cpus": 0.5, "actor_scheduling": "SPREAD", "concurrency_per_actor": 4,
        "request_timeout_s": 10, "lease_s": 30, "output_dir": str(output), "log_level": "WARNING",
    }


def train_config(model: Path, sft: Path, output: Path, steps: int) -> dict[str, Any]:
    return {
        "base_model": str(model), "sft_path": str(sft), "output_dir": str(output), "storage_path": str(output),
        "num_workers": 2, "placement_strategy": "SPREAD", "resources_per_worker": {"CPU": 1}, "zero_stage": 2,
        "micro_batch_size": 2, "effective_batch_size": 4, "max_steps": steps, "learning_rate": 1e-3,
        "checkpoint_every_steps": steps, "log_every_steps": steps, "max_length": 512, "log_level": "WARNING",
    }


def report(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "_SUCCESS.json").read_text())["report"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps of each training run")
    parser.add_argument("--users", type=int, default=16, help="simulated users (the crawl's size)")
    args = parser.parse_args()

    from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator
    from pac_lora import build_tiny_checkpoint
    from train_jobs.job import DEFAULT_EXTENSIONS_DIR
    from train_jobs.synthetic import synthetic_corpus, synthetic_sft_rows, write_synthetic_sft

    root = Path(tempfile.mkdtemp(prefix="sa-scaling-"))
    work = root / "work"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "configs").mkdir()
    rows = synthetic_sft_rows()
    model = build_tiny_checkpoint(root / "model", texts=synthetic_corpus(rows))
    sft = write_synthetic_sft(root / "sft", rows)
    rates = {"search": RateLimit(40, 2), "mobile": RateLimit(60, 4), "ajax": RateLimit(60, 4), "ai": RateLimit(40, 2)}
    sim = WeiboSimulator(SimulatorConfig(seed=11, num_users=args.users, history_posts=(5, 20), hot_topic_posts=60,
                                         topic_posts=20, rates=rates))
    redis, redis_url = start_redis(root)
    env = {"SOCIALALIGN_REDIS_URL": redis_url, "TORCH_EXTENSIONS_DIR": str(DEFAULT_EXTENSIONS_DIR),
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    figures: dict[str, Any] = {}
    try:
        with sim.running():
            for shape, (workers, cpus) in SHAPES.items():
                cookies = root / f"cookies-{shape}.txt"
                cookies.write_text("\n".join(sim.new_cookies(4)) + "\n")
                state = local_cluster.up(root / f"cluster-{shape}", workers=workers, worker_cpus=cpus, head_cpus=0,
                                         env=env)
                try:
                    violations = sim.stats()["violations"]
                    crawl_out = root / f"crawl-{shape}"
                    crawl_wall = submit(state, work, "crawl",
                                        crawl_config(sim, rates, crawl_out, cookies, f"bench:scaling:{shape}"),
                                        f"crawl-{shape}")
                    crawled = report(crawl_out)
                    train_out = root / f"train-{shape}"
                    train_wall = submit(state, work, "train", train_config(model, sft, train_out, args.steps),
                                        f"train-{shape}")
                    trained = report(train_out / "pac_lora-full")
                finally:
                    local_cluster.down(root / f"cluster-{shape}")
                figures[shape] = {
                    "crawl_s": crawled["seconds"], "crawl_job_s": round(crawl_wall, 1),
                    "crawl_requests_per_s": round(crawled["requests"] / crawled["seconds"], 1),
                    "crawl_violations": sim.stats()["violations"] - violations,
                    "train_tokens_per_s": round(trained["tokens"] / trained["train_seconds"], 1),
                    "train_s": round(trained["seconds"], 1), "train_job_s": round(train_wall, 1),
                }
                print(f"{shape}: {figures[shape]}", file=sys.stderr, flush=True)
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
    one, two = figures["1x4"], figures["2x2"]
    result = {
        "crawl_time_2x2_vs_1x4": round(two["crawl_s"] / one["crawl_s"], 3),
        "train_tokens_per_s_2x2_vs_1x4": round(two["train_tokens_per_s"] / one["train_tokens_per_s"], 3),
        "train_time_2x2_vs_1x4": round(two["train_s"] / one["train_s"], 3),
        **figures,
        "machine": f"{os.cpu_count()} cores",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
