"""`socialalign demo`: the pipeline end to end on the embedded default.

Until every stage issue lands, the demo runs the stages that exist, for real, on a local Ray (or
the cluster named by --address) and the local Weibo simulator, and then lists plainly the stages
that are not built yet. It never prints results for a stage that did not run. A rerun with the
same --out reuses what finished (the crawl resumes from its frontier).
"""

from __future__ import annotations

import logging
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.ray_connect import ray_session
from cluster.stage_configs import CrawlConfig, DemoConfig
from cluster.stages import STAGES

log = logging.getLogger(__name__)

PIPELINE = ("crawl", "build-dataset", "train", "serve", "predict", "evaluate")
DEMO_COOKIES = 4


@dataclass(frozen=True)
class DemoSize:
    users: int
    history: tuple[int, int]
    hot_topic_posts: int
    topic_posts: int


SIZES = {
    "smoke": DemoSize(users=30, history=(10, 30), hot_topic_posts=120, topic_posts=40),
    "small": DemoSize(users=100, history=(10, 60), hot_topic_posts=400, topic_posts=80),
    "medium": DemoSize(users=200, history=(20, 120), hot_topic_posts=1200, topic_posts=150),
}


def run(config: DemoConfig) -> int:
    import ray

    out = config.out.resolve()
    with ray_session(config.ray) as info:
        probe = ray.remote(num_cpus=0)(_where_am_i)
        worker = ray.get(probe.remote())
        print(f"[ray          ] ok: {info.cpus:g} CPUs, {info.gpus:g} GPUs at {info.address}; a task ran on {worker}")
        if info.dashboard_url:
            print(f"                dashboard: {info.dashboard_url}")
        crawl_dir = _crawl(config, out / "crawl")
    missing = [name for name in PIPELINE if not STAGES[name].built]
    for name in PIPELINE:
        if not STAGES[name].built:
            print(f"[{name:<13}] not built yet (issue #{STAGES[name].issue})")
    print(f"Tables: {crawl_dir}/{{topics,posts,users,history,errors}}")
    if missing:
        print(
            f"Demo incomplete: {len(missing)} of {len(PIPELINE)} pipeline stages are not built yet "
            f"({', '.join(missing)}); nothing was trained, served or evaluated (size={config.size}, out={out})."
        )
    return 0


def _crawl(config: DemoConfig, output_dir: Path) -> Path:
    """Crawl the simulator's topics through the cookie pool, as a user would crawl Weibo."""
    from pydantic import SecretStr

    from crawl_actors.job import crawl
    from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator
    from crawl_actors.tasks import BEIJING

    size = SIZES[config.size]
    rates = {"search": RateLimit(20, 2), "mobile": RateLimit(40, 4), "ajax": RateLimit(40, 4), "ai": RateLimit(20, 2)}
    simulator = WeiboSimulator(SimulatorConfig(
        seed=0, num_users=size.users, history_posts=size.history, hot_topic_posts=size.hot_topic_posts,
        topic_posts=size.topic_posts, rates=rates,
    ))
    topics = simulator.topics()
    start = min(t.start for t in topics).astimezone(BEIJING)
    end = max(t.end for t in topics).astimezone(BEIJING)
    with simulator.running():
        crawl_config = CrawlConfig(
            ray=config.ray, output_dir=output_dir, keywords=[t.name for t in topics],
            start=f"{start:%Y-%m-%d}-{start.hour}", end=f"{end:%Y-%m-%d}-{end.hour}",
            cookies=SecretStr("\n".join(simulator.new_cookies(DEMO_COOKIES))),
            endpoints={host: simulator.base_url for host in ("search", "mobile", "ajax", "ai")},
            rates={host: {"rate": r.rate, "burst": r.burst} for host, r in rates.items()},
            history_days=None, cooldown_s=1.0, cooldown_max_s=10.0, max_pause_s=30.0,
        )
        began = time.monotonic()
        summary = crawl(crawl_config)
        violations = simulator.stats()["violations"]
    rows = ", ".join(f"{count} {name}" for name, count in summary.rows.items())
    state = "ok" if summary.stop_reason is None else f"stopped early ({summary.stop_reason})"
    print(f"[crawl        ] {state}: {rows} from the Weibo simulator in {time.monotonic() - began:.1f}s, "
          f"{summary.requests} requests through {DEMO_COOKIES} cookies, {violations} rate-limit violations")
    return output_dir


def _where_am_i() -> str:
    return f"{socket.gethostname()} (Python {platform.python_version()})"


if __name__ == "__main__":
    from cluster.cli import module_main

    module_main("cluster.demo")
