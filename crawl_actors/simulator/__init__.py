"""A local Weibo: serves a seeded synthetic corpus in Weibo's real formats, with Weibo's blocks.

    from crawl_actors.simulator import SimulatorConfig, WeiboSimulator

    sim = WeiboSimulator(SimulatorConfig(seed=0, num_users=50))
    with sim.running():
        cookies = sim.new_cookies(2)
        ...crawl sim.base_url for sim.topics()...
        assert crawled == sim.ground_truth()

Endpoints, gatekeeping and faults: `server.py`; formats: `render.py`; the corpus: `corpus.py`;
what a perfect crawl recovers: `truth.py`. `python -m crawl_actors.simulator` serves it standalone.
"""

from crawl_actors.config import HOSTS, RateLimit
from crawl_actors.simulator.config import FAULT_KINDS, SimulatorConfig, unlimited_rates, weibo_limits
from crawl_actors.simulator.server import CrawlTopic, WeiboSimulator, cookie_hash

__all__ = [
    "FAULT_KINDS",
    "HOSTS",
    "CrawlTopic",
    "RateLimit",
    "SimulatorConfig",
    "WeiboSimulator",
    "cookie_hash",
    "unlimited_rates",
    "weibo_limits",
]
