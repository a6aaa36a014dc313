"""A crawl worker as a Ray actor that Ray can restart.

Ray restarts a dead actor by running its constructor again with the same arguments, but keeps only
arguments that travel inline: an ObjectRef, or an actor handle (the pool's, the frontier's) inside
an argument, may be gone by then. So a crawl actor gets plain values only (a worker id, its copy of
the config, the cookie jar, the crawl's namespace) and finds the crawl's cookie pool and frontier by
name itself.
"""

from __future__ import annotations

from typing import Any

from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import CookieJar
from crawl_actors.shared import join_cookie_pool, join_frontier
from crawl_actors.worker import CrawlWorker


def actor_config(config: CrawlConfig) -> CrawlConfig:
    """What a crawl actor needs of the config: no cookie (the jar carries them) and no seeds (the driver
    seeds the frontier), so that it stays a small argument that Ray keeps inline."""
    return config.model_copy(update={"cookies": None, "cookies_file": None, "keywords": [], "user_ids": []})


class CrawlActor:
    def __init__(self, worker_id: str, config: CrawlConfig, jar: CookieJar, namespace: str) -> None:
        pool = join_cookie_pool(config, jar.ids, namespace)
        frontier = join_frontier(config, namespace)
        self.worker = CrawlWorker(worker_id, config, jar, pool, frontier)

    async def run(self) -> dict[str, Any]:
        return await self.worker.run()

    async def stop(self, reason: str = "stopped") -> None:
        await self.worker.stop(reason)

    def report(self) -> dict[str, Any]:
        return self.worker.report()
