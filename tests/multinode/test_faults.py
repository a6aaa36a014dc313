"""A worker node lost mid-run, for real: its raylet SIGKILLed by the pid `cluster up` started (as a
machine loss ends it), during a crawl, a training run and serving. Each must cost time, not data,
and each test prints its time to recover (docs/scaling.md keeps the figures)."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from cluster import local_cluster
from tests.crawl_actors.test_crawl import assert_equals_ground_truth
from tests.multinode.conftest import job_logs, job_report, node_names, state_rows, submit, wait_for
from tests.multinode.test_stages import (
    crawl_yaml,
    generator_replicas,
    micro,
    running_generators,
    simulator,  # noqa: F401 - the module's rate-limited simulator
    start_serving,
    stop_job,
    train_workers_by_node,
    train_yaml,
)

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(900)]  # a node lost and replaced: minutes

VICTIM = "node_2"


def job_status(state, job: str) -> str:
    return local_cluster.dashboard(state, f"/api/jobs/{job}")["status"]


def wait_for_job(state, job: str, timeout_s: float = 600) -> str:
    return wait_for(lambda: (s := job_status(state, job)) in ("SUCCEEDED", "FAILED", "STOPPED") and s,
                    f"job {job} to end", timeout_s=timeout_s, poll_s=1)


@pytest.fixture()
def victim_back(multinode, cluster_secrets):
    """Whatever the test did to a worker node, it is alive again afterwards (for the next test)."""
    yield
    for name in ("node_1", "node_2"):
        if name not in local_cluster.alive_nodes(multinode):
            local_cluster.restart_node(multinode, name, env=cluster_secrets)


def test_a_node_lost_mid_crawl_costs_time_not_data(multinode, work, simulator, victim_back,  # noqa: F811
                                                   tmp_path: Path) -> None:
    (tmp_path / "cookies.txt").write_text("\n".join(simulator.new_cookies(3)) + "\n")
    # Slower than the simulator allows (3 cookies at 0.7 requests/s per host: about 2 pages/s where 4 requests/s
    # per cookie crawled it in 20 s), so the crawl lasts long enough (about two minutes) to lose a node in the
    # middle of it and see its actors restarted elsewhere (Ray marks a node dead after missed heartbeats).
    config = crawl_yaml(simulator, tmp_path / "crawl", tmp_path / "cookies.txt",
                        rates={host: {"rate": 0.7, "burst": 1} for host in ("search", "mobile", "ajax", "ai")},
                        max_pause_s=120.0)  # 16 workers queue for 3 cookies at this pace: waits of several seconds
    before, requests_before = simulator.stats()["violations"], simulator.stats()["requests"]
    job = f"mn-crawl-fault-{secrets.token_hex(3)}"
    result = submit(multinode, work, "crawl", config, "--no-wait", job_id=job)
    assert result.returncode == 0, result.stderr[-3000:]
    ray_job = wait_for(lambda: _job_id_once_running(multinode, job), "the crawl job to start")
    victim_id = local_cluster.alive_nodes(multinode)[VICTIM]

    def crawlers() -> list[dict]:
        return [a for a in state_rows(multinode, "actors", job_id=ray_job) if a["class_name"] == "CrawlActor"]

    wait_for(lambda: any(a["node_id"] == victim_id and a["state"] == "ALIVE" for a in crawlers()),
             f"a crawl actor alive on {VICTIM}")
    wait_for(lambda: simulator.stats()["requests"] > requests_before + 20, "the crawl to be under way", 180)
    on_victim = {a["actor_id"] for a in crawlers() if a["node_id"] == victim_id}
    killed_at = time.monotonic()
    local_cluster.kill_raylet(multinode, VICTIM)
    # Recovered: every crawl actor alive again, none on the lost node (while the crawl still runs).
    wait_for(lambda: (lambda actors: len(actors) == 4 and all(
        a["state"] == "ALIVE" and a["node_id"] != victim_id for a in actors))(crawlers())
        or job_status(multinode, job) != "RUNNING",
        "the lost node's crawl actors to restart elsewhere", timeout_s=240)
    assert job_status(multinode, job) == "RUNNING", "the crawl ended before its actors were restarted elsewhere"
    recovered_s = time.monotonic() - killed_at
    assert wait_for_job(multinode, job) == "SUCCEEDED", job_logs(multinode, job)[-3000:]
    finished_s = time.monotonic() - killed_at
    restarted = {a["actor_id"]: a for a in crawlers() if a["actor_id"] in on_victim}
    print(f"RECOVERY crawl: actors restarted elsewhere {recovered_s:.1f}s after the kill; "
          f"crawl finished {finished_s:.1f}s after it; restarted on "
          f"{Counter(node_names(multinode)[a['node_id']] for a in restarted.values())}")
    assert restarted and all(a["node_id"] != victim_id for a in restarted.values())
    assert simulator.stats()["violations"] == before, "the crawl exceeded a cookie's rate limit"
    assert_equals_ground_truth(simulator, tmp_path / "crawl")  # exactly once: nothing lost, nothing twice


def _job_id_once_running(state, job: str) -> str | None:
    info = local_cluster.dashboard(state, f"/api/jobs/{job}")
    return info.get("job_id") if info["status"] == "RUNNING" and info.get("job_id") else None


def test_a_node_lost_mid_training_resumes_from_the_last_checkpoint(multinode, work, train_env, base_model,
                                                                   sft_dir, cluster_secrets, victim_back,
                                                                   tmp_path: Path) -> None:
    storage = tmp_path / "shared-storage"
    steps = 16
    job = f"mn-train-fault-{secrets.token_hex(3)}"
    config = train_yaml(base_model, sft_dir, tmp_path / "train", storage_path=str(storage), max_steps=steps,
                        max_failures=3)
    result = submit(multinode, work, "train", config, "--no-wait", job_id=job)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = storage / "pac_lora-full"
    wait_for(lambda: any(run_dir.glob("checkpoint_*")), "the first checkpoint in the shared storage", 300)
    # The worker node that holds a training worker (STRICT_SPREAD may use the head and either worker node).
    victim = next(node for node in train_workers_by_node(multinode, job) if node != "head")
    killed_at = time.monotonic()
    local_cluster.kill_raylet(multinode, victim)
    # Not replaced: STRICT_SPREAD's two bundles fit on the head and node_1 (a CPU each).
    wait_for(lambda: "resumed from the checkpoint at step" in job_logs(multinode, job),
             "the workers to resume from the checkpoint", timeout_s=300, poll_s=1)
    recovered_s = time.monotonic() - killed_at
    status = wait_for_job(multinode, job)
    logs = job_logs(multinode, job)
    assert status == "SUCCEEDED", logs[-4000:]
    report = job_report(tmp_path / "train" / "pac_lora-full")
    print(f"RECOVERY train: workers resumed from the checkpoint {recovered_s:.1f}s after the kill "
          f"(on the surviving nodes); run finished {time.monotonic() - killed_at:.1f}s after it; "
          f"workers now {dict(train_workers_by_node(multinode, job))}")
    assert report["steps"] == steps
    assert math.isfinite(report["final_loss"])


def test_a_node_lost_while_serving_answers_503_or_200_never_hangs(multinode, work, tiny_models,
                                                                 cluster_secrets, victim_back, tmp_path: Path) -> None:
    # Half a CPU per replica: the lost node's replica can be rescheduled on a surviving node (the head).
    job, url = start_serving(multinode, work, tiny_models, tmp_path, replica_cpus=0.5)
    outcomes: list[tuple[float, int, str | None]] = []  # (time, status or 0 for a client timeout, Retry-After)
    stop = threading.Event()

    def client() -> None:
        index = 0
        while not stop.is_set():
            began = time.monotonic()
            try:
                response = requests.post(f"{url}/v1/predict/micro", json=micro(("alpha", "beta")[index % 2]),
                                         timeout=30)
                outcomes.append((began, response.status_code, response.headers.get("Retry-After")))
            except requests.RequestException as error:
                outcomes.append((began, 0, type(error).__name__))
            index += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(1 for _, status, _ in outcomes if status == 200) >= 10, "answers before the kill")
        victim = next(node for node in generator_replicas(multinode).values() if node != "head")
        victim_id = local_cluster.alive_nodes(multinode)[victim]
        killed_at = time.monotonic()
        local_cluster.kill_raylet(multinode, victim)
        wait_for(lambda: running_generators(multinode) == 2 and victim_id not in
                 {a["node_id"] for a in state_rows(multinode, "actors", state="ALIVE")
                  if a["class_name"].endswith(":Generator")}, "two replicas again, none on the lost node",
                 timeout_s=240)
        replicas_s = time.monotonic() - killed_at
        wait_for(lambda: _all_ok_since(outcomes, time.monotonic() - 3, 5), "healthy answers again", 120)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        during = [o for o in outcomes if o[0] >= killed_at]
        bad = [o for o in during if o[1] not in (200, 503) or (o[1] == 503 and o[2] is None)]
        statuses = Counter(status for _, status, _ in during)
        first_ok_after = min((t for t, status, _ in during if status == 200 and t > killed_at), default=None)
        print(f"RECOVERY serve: answers after the kill {dict(statuses)}; two replicas again {replicas_s:.1f}s "
              f"after the kill; replicas {generator_replicas(multinode)}; first 200 after the kill "
              f"{(first_ok_after - killed_at) if first_ok_after else float('nan'):.1f}s")
        assert not bad, f"answers other than 200 or 503+Retry-After (0: no answer in 30 s): {bad[:5]}"
    finally:
        stop.set()
        stop_job(multinode, job)


def _all_ok_since(outcomes: list, since: float, at_least: int) -> bool:
    recent = [status for began, status, _ in outcomes if began >= since]
    return len(recent) >= at_least and all(status == 200 for status in recent)
