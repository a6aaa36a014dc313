"""`socialalign demo`: the whole pipeline end to end, for real, on a laptop with no GPU, no cookies,
no API key and no model weights.

It runs every stage the way a user does, by module name: the local Weibo simulator
(`python -m crawl_actors.simulator`) and the Serve app (`python -m serve`) as processes of their
own, and crawl, build-dataset, train, predict and evaluate through the stage registry on one
local Ray (or --address). Stages hand over through their tables and `_SUCCESS.json` reports. A
rerun with the same --out reuses what finished.
"""

from cluster.demo.config import DemoConfig
from cluster.demo.pipeline import run

__all__ = ["DemoConfig", "run"]
