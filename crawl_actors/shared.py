"""Where one crawl keeps the state its driver and crawl actors share: the cookie pool and the frontier.

Both are found by name: the driver opens them (creating the Ray actor backends' actors), and each
crawl actor (also one that Ray restarted) finds the same ones from the crawl's config and
namespace, so nothing but plain values has to be handed to an actor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import CookiePool, create_cookie_pool, find_cookie_pool
from crawl_actors.frontier import ActorFrontier, RedisFrontier, create_frontier, find_frontier


def crawl_namespace(config: CrawlConfig) -> str:
    """Names this crawl's state (Redis keys, Ray actors): from crawl_id, else from the output dir."""
    crawl_id = config.crawl_id or hashlib.sha1(str(config.output_dir.resolve()).encode()).hexdigest()[:10]
    return f"socialalign:crawl:{crawl_id}"


def open_cookie_pool(config: CrawlConfig, cookie_ids: Sequence[str], namespace: str) -> CookiePool:
    """The crawl's cookie pool, for the driver. In Redis its state is keyed by cookie id under
    `cookie_namespace`, one for every crawl (not under the crawl's namespace): a cookie's rate limit is
    Weibo's, whichever crawl sends the request, so two crawls sharing a cookie must share its bucket,
    cooldown and ban. The Ray actor backend lives and dies with one job, so it stays per crawl; share
    cookies across crawls through Redis."""
    return create_cookie_pool(config, cookie_ids, _redis_url(config), name=_pool_name(config, namespace))


def open_frontier(config: CrawlConfig, namespace: str) -> RedisFrontier | ActorFrontier:
    """The crawl's frontier, for the driver."""
    return create_frontier(config.output_dir, _redis_url(config), namespace)


def join_cookie_pool(config: CrawlConfig, cookie_ids: Sequence[str], namespace: str) -> CookiePool:
    """The pool the driver opened, for a crawl actor."""
    return find_cookie_pool(config, cookie_ids, _redis_url(config), name=_pool_name(config, namespace))


def join_frontier(config: CrawlConfig, namespace: str) -> RedisFrontier | ActorFrontier:
    """The frontier the driver opened, for a crawl actor."""
    return find_frontier(_redis_url(config), namespace)


def _pool_name(config: CrawlConfig, namespace: str) -> str:
    return config.cookie_namespace if config.redis_url else f"{namespace}:cookies"


def _redis_url(config: CrawlConfig) -> str | None:
    return config.redis_url.get_secret_value() if config.redis_url else None
