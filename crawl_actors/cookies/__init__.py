"""A rate-limited Weibo cookie pool shared by every crawl actor: one interface, two backends.

Cookie values are secrets. The pool (in Redis or in a Ray actor) only ever sees `cookie_id(value)`;
each crawler process keeps a `CookieJar` that turns a granted id back into the `Cookie:` header.
The pool reads the crawl's `CookiePacing` (rates per host, cooldowns); `state` holds the state
machine and the `CookiePool` interface, `redis_pool` and `actor_pool` the two backends.
"""

from collections.abc import Sequence

from crawl_actors.config import CookiePacing
from crawl_actors.cookies.actor_pool import ActorCookiePool, CookiePoolActor
from crawl_actors.cookies.jar import CookieJar, cookie_id
from crawl_actors.cookies.redis_pool import DEFAULT_NAME, RedisCookiePool
from crawl_actors.cookies.state import (
    OUTCOMES,
    CookiePool,
    CookieStatus,
    Grant,
    NoUsableCookie,
    Outcome,
    PoolState,
)


def create_cookie_pool(
    pacing: CookiePacing, cookie_ids: Sequence[str], redis_url: str | None = None, name: str = DEFAULT_NAME
) -> CookiePool:
    """The Redis pool when `redis_url` is given (`name` is its key namespace), else a client of the
    named `CookiePoolActor` (got, or created in the current Ray namespace).

    The actor is not detached: it belongs to whoever creates it first and ends with that process,
    so a finished or killed job leaves no stale pool behind: call this in the driver, and
    `find_cookie_pool` in crawl actors. State that must outlive the job or the driver belongs in Redis."""
    if redis_url is not None:
        return RedisCookiePool(redis_url, pacing, cookie_ids, namespace=name)
    return ActorCookiePool.create(pacing, cookie_ids, name)


def find_cookie_pool(
    pacing: CookiePacing, cookie_ids: Sequence[str], redis_url: str | None = None, name: str = DEFAULT_NAME
) -> CookiePool:
    """The pool that `create_cookie_pool` made with the same arguments (a crawl actor's way to it)."""
    if redis_url is not None:
        return RedisCookiePool(redis_url, pacing, cookie_ids, namespace=name)
    return ActorCookiePool.find(pacing, cookie_ids, name)


__all__ = [
    "DEFAULT_NAME",
    "OUTCOMES",
    "ActorCookiePool",
    "CookieJar",
    "CookiePool",
    "CookiePoolActor",
    "CookieStatus",
    "Grant",
    "NoUsableCookie",
    "Outcome",
    "PoolState",
    "RedisCookiePool",
    "cookie_id",
    "create_cookie_pool",
    "find_cookie_pool",
]
