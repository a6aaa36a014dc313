"""A local Weibo: serves a seeded synthetic corpus in Weibo's real formats, with Weibo's blocks.

    from crawl_actors.simulator import SimulatorConfig, WeiboSimulator

    sim = WeiboSimulator(SimulatorConfig(seed=0, num_users=50))
    with sim.running():
        cookies = sim.new_cookies(2)
        ...crawl sim.base_url for sim.topics()...
        assert crawled == sim.ground_truth()

Endpoints, gatekeeping and faults: `server.py`; formats: `render.py`; the corpus: `corpus.py`;
what a perfect crawl recovers, and each post's true sentiment: `truth.py` (`truth_table`: the
evaluation's truth file); posts drawn again with the same traits: `oracle.py`.
`python -m crawl_actors.simulator` serves it standalone.
"""

from crawl_actors.config import HOSTS, RateLimit
from crawl_actors.simulator.config import FAULT_KINDS, SimulatorConfig, unlimited_rates, weibo_limits
from crawl_actors.simulator.corpus import true_sentiment
from crawl_actors.simulator.oracle import oracle_predictions, oracle_samples, oracle_sentiments
from crawl_actors.simulator.server import CrawlTopic, WeiboSimulator, cookie_hash
from crawl_actors.simulator.truth import topic_terms, truth_rows, truth_table

__all__ = [
    "FAULT_KINDS",
    "HOSTS",
    "CrawlTopic",
    "RateLimit",
    "SimulatorConfig",
    "WeiboSimulator",
    "cookie_hash",
    "oracle_predictions",
    "oracle_samples",
    "oracle_sentiments",
    "topic_terms",
    "true_sentiment",
    "truth_rows",
    "truth_table",
    "unlimited_rates",
    "weibo_limits",
]
