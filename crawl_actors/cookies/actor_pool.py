"""The cookie pool in a Ray actor: `PoolState` in memory, for crawls without Redis.

The actor lives and dies with the job that created it, so its state is per crawl; share cookies
across crawls through Redis.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import ray

from crawl_actors.config import CookiePacing
from crawl_actors.cookies.jar import checked_ids
from crawl_actors.cookies.state import CookiePool, CookieStatus, Grant, Outcome, PoolState


@ray.remote(num_cpus=0)
class CookiePoolActor:
    """`PoolState` on the actor's monotonic clock. Its methods are sync, so Ray runs them one at a
    time: each call is atomic without locks."""

    def __init__(self, pacing: CookiePacing, cookie_ids: list[str]) -> None:
        self._state = PoolState(pacing)
        self._state.register(cookie_ids)

    def register(self, pacing: CookiePacing, cookie_ids: list[str]) -> None:
        if pacing != self._state.pacing:
            raise ValueError("this cookie pool actor already runs with other rates or cooldowns: use another name")
        self._state.register(cookie_ids)

    def acquire(self, host: str, among: list[str]) -> Grant:
        return self._state.acquire(host, among, time.monotonic())

    def report(self, cookie_id: str, host: str, outcome: str) -> None:
        self._state.report(cookie_id, host, outcome, time.monotonic())

    def status(self, among: list[str]) -> list[CookieStatus]:
        return self._state.status(among, time.monotonic())


class ActorCookiePool(CookiePool):
    """Client of a `CookiePoolActor`."""

    def __init__(
        self, actor: ray.actor.ActorHandle, pacing: CookiePacing, cookie_ids: Sequence[str], name: str
    ) -> None:
        self.pacing = pacing.pacing()
        self.cookie_ids = checked_ids(cookie_ids)
        self.name = name
        self._actor = actor

    @classmethod
    def create(cls, pacing: CookiePacing, cookie_ids: Sequence[str], name: str) -> ActorCookiePool:
        """The client of the actor `name` (in the current Ray namespace), created first if need be, with
        these cookies registered."""
        pacing, ids = pacing.pacing(), checked_ids(cookie_ids)
        actor = CookiePoolActor.options(name=name, get_if_exists=True).remote(pacing, ids)
        ray.get(actor.register.remote(pacing, ids))
        return cls(actor, pacing, ids, name)

    @classmethod
    def find(cls, pacing: CookiePacing, cookie_ids: Sequence[str], name: str) -> ActorCookiePool:
        """The client of the actor `name` that `create` made, without a blocking call (this runs in
        async crawl actors); its creator registered the cookies."""
        return cls(ray.get_actor(name), pacing, cookie_ids, name)

    async def acquire(self, host: str) -> Grant:
        self.pacing.rate_for(host)
        return await self._actor.acquire.remote(host, self.cookie_ids)

    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None:
        self._check_report(cookie_id, host, outcome)
        await self._actor.report.remote(cookie_id, host, outcome)

    async def status(self) -> list[CookieStatus]:
        return await self._actor.status.remote(self.cookie_ids)

    def __repr__(self) -> str:
        return f"ActorCookiePool(name={self.name!r}, {len(self.cookie_ids)} cookies)"
