"""The cookie pool's state machine, and the interface every backend offers crawlers.

Per (cookie, host class) a token bucket holds at most `burst` tokens and refills at `rate`/s.
`report()` feeds what Weibo answered back into the pool: "throttled" (418, 414, 5xx) cools the
cookie down on every host with exponential backoff, "expired" (432, visitor page, ok:-100) takes
it out for good, "ok" resets the backoff. `PoolState` is that machine in plain Python with the
clock passed in; the Redis backend's Lua scripts repeat it, and the tests check the two agree.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from crawl_actors.config import CookiePacing
from crawl_actors.cookies.jar import checked_ids, shown_id

log = logging.getLogger(__name__)

Outcome = Literal["ok", "throttled", "expired"]
OUTCOMES: tuple[str, ...] = ("ok", "throttled", "expired")


class NoUsableCookie(RuntimeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Grant:
    """A granted cookie id, or None and how long until the earliest cookie has a token
    (math.inf: every cookie is dead)."""

    cookie_id: str | None
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class CookieStatus:
    cookie_id: str
    state: Literal["ok", "cooling", "dead"]
    cooldown_until: float  # the backend's clock: Redis TIME (epoch s) or the actor's monotonic clock
    cooldown_left_s: float
    consecutive_failures: int
    tokens: dict[str, float]
    granted: dict[str, int]
    throttled: dict[str, int]
    expired: int


@dataclass
class CookieState:
    """One cookie's state; the Redis hash holds the same fields."""

    dead: bool = False
    cooldown_until: float = 0.0
    failures: int = 0
    expired: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # as of stamps[host]
    stamps: dict[str, float] = field(default_factory=dict)
    granted: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)

    def tokens_at(self, host: str, rate: float, burst: int, now: float) -> float:
        if host not in self.tokens:
            return float(burst)
        return min(float(burst), self.tokens[host] + max(0.0, now - self.stamps[host]) * rate)

    def status(self, cookie_id: str, pacing: CookiePacing, now: float) -> CookieStatus:
        left = max(0.0, self.cooldown_until - now)
        return CookieStatus(
            cookie_id=cookie_id,
            state="dead" if self.dead else "cooling" if left > 0 else "ok",
            cooldown_until=self.cooldown_until,
            cooldown_left_s=left,
            consecutive_failures=self.failures,
            tokens={h: self.tokens_at(h, limit.rate, limit.burst, now) for h, limit in pacing.rates.items()},
            granted=dict(self.granted),
            throttled=dict(self.throttled),
            expired=self.expired,
        )


class PoolState:
    """The pool's state machine in plain Python, with the clock passed in. `CookiePoolActor` runs it;
    the Redis backend's acquire and report scripts are the same steps in Lua."""

    def __init__(self, pacing: CookiePacing) -> None:
        self.pacing = pacing
        self._cookies: dict[str, CookieState] = {}
        self._cursor = 0

    def register(self, cookie_ids: Iterable[str]) -> None:
        for cid in checked_ids(cookie_ids):
            self._cookies.setdefault(cid, CookieState())

    def acquire(self, host: str, among: Sequence[str], now: float) -> Grant:
        """Take a token from the usable cookie with the most tokens, scanning from a rotating start."""
        limit = self.pacing.rate_for(host)
        start = self._cursor % len(among)
        best, best_tokens, wait = None, -1.0, math.inf
        for offset in range(len(among)):
            cid = among[(start + offset) % len(among)]
            cookie = self._cookie(cid)
            if cookie.dead:
                continue
            tokens = cookie.tokens_at(host, limit.rate, limit.burst, now)
            cooldown = cookie.cooldown_until - now
            if cooldown <= 0 and tokens >= 1:
                if tokens > best_tokens:
                    best, best_tokens = cid, tokens
            else:
                wait = min(wait, max(cooldown, (1 - tokens) / limit.rate, 0.0))
        if best is None:
            return Grant(None, wait)
        self._take(self._cookies[best], host, best_tokens, now)
        return Grant(best, 0.0)

    def report(self, cookie_id: str, host: str, outcome: str, now: float) -> None:
        self.pacing.rate_for(host)
        check_outcome(outcome)
        cookie = self._cookie(cookie_id)
        if outcome == "expired":
            cookie.dead = True
            cookie.expired += 1
            return
        # Replies to requests sent before the cooldown began arrive during it: they belong to the
        # episode that started it, so they neither lengthen the backoff nor reset it.
        settled = not cookie.dead and now >= cookie.cooldown_until
        if outcome == "throttled":
            cookie.throttled[host] = cookie.throttled.get(host, 0) + 1
            if settled:
                cookie.failures += 1
                cookie.cooldown_until = now + self.pacing.cooldown_after(cookie.failures)
        elif settled:
            cookie.failures = 0

    def status(self, among: Sequence[str], now: float) -> list[CookieStatus]:
        return [self._cookie(cid).status(cid, self.pacing, now) for cid in among]

    def _take(self, cookie: CookieState, host: str, tokens: float, now: float) -> None:
        cookie.tokens[host], cookie.stamps[host] = tokens - 1, now
        cookie.granted[host] = cookie.granted.get(host, 0) + 1
        self._cursor += 1

    def _cookie(self, cid: str) -> CookieState:
        try:
            return self._cookies[cid]
        except KeyError:
            raise ValueError(f"unknown cookie id {shown_id(cid)}: it was never registered with this pool") from None


class CookiePool(abc.ABC):
    """What crawlers use; `RedisCookiePool` and `ActorCookiePool` implement it."""

    pacing: CookiePacing
    cookie_ids: list[str]

    @abc.abstractmethod
    async def acquire(self, host: str) -> Grant: ...

    @abc.abstractmethod
    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None: ...

    @abc.abstractmethod
    async def status(self) -> list[CookieStatus]: ...

    async def aclose(self) -> None:  # noqa: B027 - a hook: a backend without connections has nothing to close
        """Release connections; the pool's state stays where it is."""

    async def __aenter__(self) -> CookiePool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def usable_count(self) -> int:
        return sum(s.state == "ok" for s in await self.status())

    async def acquire_wait(self, host: str, deadline_s: float | None = None) -> str:
        """A cookie id for `host`, sleeping until one has a token. Gives up at once when every cookie
        is dead, or when none can be usable within `deadline_s` seconds from now (default
        `pacing.max_pause_s`): the pool knows when the earliest one will be, so waiting that out
        first would only waste the crawl's time."""
        budget = self.pacing.max_pause_s if deadline_s is None else deadline_s
        give_up_at = time.monotonic() + budget
        while True:
            grant = await self.acquire(host)
            if grant.cookie_id is not None:
                return grant.cookie_id
            if math.isinf(grant.retry_after_s):
                raise NoUsableCookie(f"all {len(self.cookie_ids)} cookies are dead (expired or banned): add fresh ones")
            if grant.retry_after_s > give_up_at - time.monotonic():
                limit = f"max_pause_s={budget:g}s" if deadline_s is None else f"deadline_s={budget:g}s"
                raise NoUsableCookie(
                    f"no cookie usable for {host!r} within {limit}: the earliest is in "
                    f"{grant.retry_after_s:.1f}s ({await self.usable_count()} of {len(self.cookie_ids)} not cooling)"
                )
            # Jitter spreads the wake-ups of many acquirers waiting for the same token.
            await asyncio.sleep(grant.retry_after_s * random.uniform(1.0, 1.1) + 0.001)

    def _check_report(self, cookie_id: str, host: str, outcome: str) -> None:
        self.pacing.rate_for(host)
        check_outcome(outcome)
        if cookie_id not in self.cookie_ids:
            raise ValueError(f"unknown cookie id {shown_id(cookie_id)}: this pool has {self.cookie_ids}")
        if outcome != "ok":
            level = logging.WARNING if outcome == "expired" else logging.INFO
            log.log(level, "cookie %s %s on %s", cookie_id, outcome, host)


def check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}: expected one of {OUTCOMES}")
