"""A rate-limited Weibo cookie pool shared by every crawl actor: one interface, two backends.

Cookie values are secrets. The pool (in Redis or in a Ray actor) only ever sees `cookie_id(value)`;
each crawler process keeps a `CookieJar` that turns a granted id back into the `Cookie:` header.

Per (cookie, host class) a token bucket holds at most `burst` tokens and refills at `rate`/s.
`report()` feeds what Weibo answered back into the pool: "throttled" (418, 414, 5xx) cools the
cookie down on every host with exponential backoff, "expired" (432, visitor page, ok:-100) takes
it out for good, "ok" resets the backoff.

Backends:
- `RedisCookiePool`: state in Redis, changed only by Lua scripts that read Redis `TIME` (one clock
  for all nodes); survives actor and driver restarts.
- `ActorCookiePool`: a client of the named `CookiePoolActor` that keeps the state in memory.
`create_cookie_pool()` picks one. Both run the state machine of `PoolState`; the Lua scripts
repeat it, and the tests check the two agree step by step.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import ray

log = logging.getLogger(__name__)

Outcome = Literal["ok", "throttled", "expired"]
OUTCOMES: tuple[str, ...] = ("ok", "throttled", "expired")
DEFAULT_RATES: dict[str, tuple[float, int]] = {"search": (0.2, 1), "mobile": (2.0, 2), "ajax": (1.0, 1), "ai": (0.5, 1)}
DEFAULT_NAME = "socialalign:cookies"
_ID = re.compile(r"^[0-9a-f]{10}$")


def cookie_id(value: str) -> str:
    """The public name of a cookie: the first 10 hex characters of sha256(value)."""
    return hashlib.sha256(value.strip().encode()).hexdigest()[:10]


class NoUsableCookie(RuntimeError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CookieJar:
    """id -> value for one crawler process; its repr names ids only."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values: dict[str, str] = {}
        for position, raw in enumerate(values):
            value = raw.strip()
            if not value:
                raise ValueError(f"cookie #{position} is empty")
            known = self._values.setdefault(cookie_id(value), value)
            if known != value:
                raise ValueError(f"cookie #{position} shares its id {cookie_id(value)} with another cookie")

    @classmethod
    def from_lines(cls, text: str) -> CookieJar:
        """One cookie a line, as in `CrawlConfig.cookies`; blank lines and `#` comments are skipped."""
        return cls(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))

    @property
    def ids(self) -> list[str]:
        return list(self._values)

    def header(self, cookie_id: str) -> str:
        """The `Cookie:` header value for a granted id."""
        try:
            return self._values[cookie_id]
        except KeyError:
            raise KeyError(f"cookie id {_shown(cookie_id)} is not in this jar") from None

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"CookieJar({len(self)} cookies: {', '.join(self._values)})"

    __str__ = __repr__


@dataclass(frozen=True)
class PoolSettings:
    """rates: host class -> (requests per second, burst), per cookie."""

    rates: dict[str, tuple[float, int]] = field(default_factory=lambda: dict(DEFAULT_RATES))
    backoff_base_s: float = 30.0
    backoff_max_s: float = 900.0
    backoff_factor: float = 2.0
    max_pause_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.rates:
            raise ValueError("PoolSettings.rates is empty: give at least one host class")
        for host, (rate, burst) in self.rates.items():
            if not rate > 0:
                raise ValueError(f"PoolSettings.rates[{host!r}]: rate must be > 0 requests/s, got {rate}")
            if int(burst) != burst or burst < 1:
                raise ValueError(f"PoolSettings.rates[{host!r}]: burst must be an integer >= 1, got {burst}")
        object.__setattr__(self, "rates", {h: (float(r), int(b)) for h, (r, b) in self.rates.items()})
        if not self.backoff_base_s > 0:
            raise ValueError(f"PoolSettings.backoff_base_s must be > 0, got {self.backoff_base_s}")
        if not self.backoff_max_s >= self.backoff_base_s:
            raise ValueError(f"PoolSettings.backoff_max_s must be >= backoff_base_s, got {self.backoff_max_s}")
        if not self.backoff_factor >= 1:
            raise ValueError(f"PoolSettings.backoff_factor must be >= 1, got {self.backoff_factor}")
        if not self.max_pause_s >= 0:
            raise ValueError(f"PoolSettings.max_pause_s must be >= 0, got {self.max_pause_s}")

    def rate_for(self, host: str) -> tuple[float, int]:
        try:
            return self.rates[host]
        except KeyError:
            raise ValueError(f"unknown host class {host!r}: PoolSettings.rates has {sorted(self.rates)}") from None

    def backoff_s(self, failures: int) -> float:
        try:
            raw = self.backoff_base_s * self.backoff_factor ** (failures - 1)
        except OverflowError:
            raw = math.inf
        return min(self.backoff_max_s, raw)


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
class _Cookie:
    """One cookie's state; the Redis hash holds the same fields (see `_from_redis`)."""

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

    def status(self, cookie_id: str, settings: PoolSettings, now: float) -> CookieStatus:
        left = max(0.0, self.cooldown_until - now)
        return CookieStatus(
            cookie_id=cookie_id,
            state="dead" if self.dead else "cooling" if left > 0 else "ok",
            cooldown_until=self.cooldown_until,
            cooldown_left_s=left,
            consecutive_failures=self.failures,
            tokens={h: self.tokens_at(h, r, b, now) for h, (r, b) in settings.rates.items()},
            granted=dict(self.granted),
            throttled=dict(self.throttled),
            expired=self.expired,
        )


class PoolState:
    """The pool's state machine in plain Python, with the clock passed in. `CookiePoolActor` runs it;
    `_ACQUIRE_LUA` and `_REPORT_LUA` are the same steps in Lua."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._cookies: dict[str, _Cookie] = {}
        self._cursor = 0

    def register(self, cookie_ids: Iterable[str]) -> None:
        for cid in _checked_ids(cookie_ids):
            self._cookies.setdefault(cid, _Cookie())

    def acquire(self, host: str, among: Sequence[str], now: float) -> Grant:
        """Take a token from the usable cookie with the most tokens, scanning from a rotating start."""
        rate, burst = self.settings.rate_for(host)
        start = self._cursor % len(among)
        best, best_tokens, wait = None, -1.0, math.inf
        for offset in range(len(among)):
            cid = among[(start + offset) % len(among)]
            cookie = self._cookie(cid)
            if cookie.dead:
                continue
            tokens = cookie.tokens_at(host, rate, burst, now)
            cooldown = cookie.cooldown_until - now
            if cooldown <= 0 and tokens >= 1:
                if tokens > best_tokens:
                    best, best_tokens = cid, tokens
            else:
                wait = min(wait, max(cooldown, (1 - tokens) / rate, 0.0))
        if best is None:
            return Grant(None, wait)
        cookie = self._cookies[best]
        cookie.tokens[host], cookie.stamps[host] = best_tokens - 1, now
        cookie.granted[host] = cookie.granted.get(host, 0) + 1
        self._cursor += 1
        return Grant(best, 0.0)

    def report(self, cookie_id: str, host: str, outcome: str, now: float) -> None:
        self.settings.rate_for(host)
        _check_outcome(outcome)
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
                cookie.cooldown_until = now + self.settings.backoff_s(cookie.failures)
        elif settled:
            cookie.failures = 0

    def status(self, among: Sequence[str], now: float) -> list[CookieStatus]:
        return [self._cookie(cid).status(cid, self.settings, now) for cid in among]

    def _cookie(self, cid: str) -> _Cookie:
        try:
            return self._cookies[cid]
        except KeyError:
            raise ValueError(f"unknown cookie id {_shown(cid)}: it was never registered with this pool") from None


class CookiePool(abc.ABC):
    """What crawlers use; `RedisCookiePool` and `ActorCookiePool` implement it."""

    settings: PoolSettings
    cookie_ids: list[str]

    @abc.abstractmethod
    async def acquire(self, host: str) -> Grant: ...

    @abc.abstractmethod
    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None: ...

    @abc.abstractmethod
    async def status(self) -> list[CookieStatus]: ...

    async def aclose(self) -> None:
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
        `settings.max_pause_s`): the pool knows when the earliest one will be, so waiting that out
        first would only waste the crawl's time."""
        budget = self.settings.max_pause_s if deadline_s is None else deadline_s
        limit = f"max_pause_s={budget:g}s" if deadline_s is None else f"deadline_s={budget:g}s"
        give_up_at = time.monotonic() + budget
        while True:
            grant = await self.acquire(host)
            if grant.cookie_id is not None:
                return grant.cookie_id
            if math.isinf(grant.retry_after_s):
                raise NoUsableCookie(f"all {len(self.cookie_ids)} cookies are dead (expired or banned): add fresh ones")
            if grant.retry_after_s > give_up_at - time.monotonic():
                raise NoUsableCookie(
                    f"no cookie usable for {host!r} within {limit}: the earliest is in "
                    f"{grant.retry_after_s:.1f}s ({await self.usable_count()} of {len(self.cookie_ids)} not cooling)"
                )
            # Jitter spreads the wake-ups of many acquirers waiting for the same token.
            await asyncio.sleep(grant.retry_after_s * random.uniform(1.0, 1.1) + 0.001)

    def _check_report(self, cookie_id: str, host: str, outcome: str) -> None:
        self.settings.rate_for(host)
        _check_outcome(outcome)
        if cookie_id not in self.cookie_ids:
            raise ValueError(f"unknown cookie id {_shown(cookie_id)}: this pool has {self.cookie_ids}")
        if outcome != "ok":
            level = logging.WARNING if outcome == "expired" else logging.INFO
            log.log(level, "cookie %s %s on %s", cookie_id, outcome, host)


def _checked_ids(cookie_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(cookie_ids))
    for position, cid in enumerate(ids):
        if not isinstance(cid, str) or not _ID.match(cid):
            # Never echo the entry: a cookie value passed here by mistake would end up in a log.
            raise ValueError(f"cookie_ids[{position}] is not an id from cookie_id() (10 lowercase hex chars)")
    if not ids:
        raise ValueError("cookie_ids is empty: the pool needs at least one cookie")
    return ids


def _shown(cid: object) -> str:
    """An id for a message; anything else might be a cookie value passed by mistake."""
    return repr(cid) if isinstance(cid, str) and _ID.match(cid) else "(not an id from cookie_id())"


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}: expected one of {OUTCOMES}")


# --- Redis backend -------------------------------------------------------------------------------
# Keys: "<ns>:cursor" (int, rotates the scan start), "<ns>:cookie:<id>" (hash: state ok|dead,
# cooldown_until, failures, expired, tokens:<host>, stamp:<host>, granted:<host>, throttled:<host>).
# Numbers are written with %.17g so that they round-trip exactly, as the Python state keeps them.

_NOW_LUA = """
local function now_s(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function num(x) return string.format('%.17g', x) end
local MISSING = 'cookie state is missing from Redis (flushed or restarted without persistence?): create the pool again'
"""

_REGISTER_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('HSETNX', key, 'state', 'ok') == 1 then
    redis.call('HSET', key, 'cooldown_until', '0', 'failures', '0', 'expired', '0')
  end
end
"""

# KEYS: cursor, cookie hashes; ARGV: host, rate, burst, now override. Returns {index or 0, wait}.
_ACQUIRE_LUA = _NOW_LUA + """
local host, rate, burst, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_s(ARGV[4])
local n = #KEYS - 1
local start = tonumber(redis.call('GET', KEYS[1]) or '0') % n
local best, best_tokens, wait = 0, -1, math.huge
for offset = 0, n - 1 do
  local index = (start + offset) % n + 1
  local c = redis.call('HMGET', KEYS[index + 1], 'state', 'cooldown_until', 'tokens:' .. host, 'stamp:' .. host)
  if not c[1] then return redis.error_reply(MISSING) end
  if c[1] ~= 'dead' then
    local tokens = burst
    if c[3] then tokens = math.min(burst, tonumber(c[3]) + math.max(0, now - tonumber(c[4])) * rate) end
    local cooldown = tonumber(c[2]) - now
    if cooldown <= 0 and tokens >= 1 then
      if tokens > best_tokens then best, best_tokens = index, tokens end
    else
      wait = math.min(wait, math.max(cooldown, (1 - tokens) / rate, 0))
    end
  end
end
if best == 0 then
  if wait == math.huge then return {0, 'inf'} end
  return {0, num(wait)}
end
local key = KEYS[best + 1]
redis.call('HSET', key, 'tokens:' .. host, num(best_tokens - 1), 'stamp:' .. host, num(now))
redis.call('HINCRBY', key, 'granted:' .. host, 1)
redis.call('INCR', KEYS[1])
return {best, '0'}
"""

# KEYS: cookie hash; ARGV: host, outcome, backoff base, factor, max, now override.
_REPORT_LUA = _NOW_LUA + """
local key, host, outcome = KEYS[1], ARGV[1], ARGV[2]
local base, factor, max_s, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), now_s(ARGV[6])
local c = redis.call('HMGET', key, 'state', 'cooldown_until', 'failures')
if not c[1] then return redis.error_reply(MISSING) end
if outcome == 'expired' then
  redis.call('HSET', key, 'state', 'dead')
  redis.call('HINCRBY', key, 'expired', 1)
  return 0
end
local settled = c[1] ~= 'dead' and now >= tonumber(c[2])
if outcome == 'throttled' then
  redis.call('HINCRBY', key, 'throttled:' .. host, 1)
  if settled then
    local failures = tonumber(c[3]) + 1
    local backoff = math.min(max_s, base * factor ^ (failures - 1))
    redis.call('HSET', key, 'failures', failures, 'cooldown_until', num(now + backoff))
  end
elseif settled then
  redis.call('HSET', key, 'failures', 0)
end
return 0
"""

# KEYS: cookie hashes; ARGV: now override. Returns {now, fields of each hash}.
_STATUS_LUA = _NOW_LUA + """
local out = {num(now_s(ARGV[1]))}
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return redis.error_reply(MISSING) end
  out[#out + 1] = redis.call('HGETALL', key)
end
return out
"""


class RedisCookiePool(CookiePool):
    """The pool in Redis. Creating it again with the same namespace picks up the state there: new ids
    are added, known ones keep their tokens, backoff and death. `clock` is for tests only: it
    replaces Redis TIME in the scripts."""

    def __init__(
        self,
        url: str,
        settings: PoolSettings,
        cookie_ids: Sequence[str],
        namespace: str = DEFAULT_NAME,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.settings = settings
        self.cookie_ids = _checked_ids(cookie_ids)
        self.namespace = namespace
        self._url = url
        self._where = _redacted(url)
        self._clock = clock
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._keys = [f"{namespace}:cookie:{cid}" for cid in self.cookie_ids]
        self._scripts = {
            name: self._redis.register_script(lua)
            for name, lua in [
                ("register", _REGISTER_LUA),
                ("acquire", _ACQUIRE_LUA),
                ("report", _REPORT_LUA),
                ("status", _STATUS_LUA),
            ]
        }
        self._registered = False

    async def acquire(self, host: str) -> Grant:
        rate, burst = self.settings.rate_for(host)
        await self._register()
        keys = [f"{self.namespace}:cursor", *self._keys]
        index, wait = await self._scripts["acquire"](keys=keys, args=[host, repr(rate), burst, self._now()])
        if int(index):
            return Grant(self.cookie_ids[int(index) - 1])
        return Grant(None, float(wait))

    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None:
        self._check_report(cookie_id, host, outcome)
        await self._register()
        s = self.settings
        args = [host, outcome, repr(s.backoff_base_s), repr(s.backoff_factor), repr(s.backoff_max_s), self._now()]
        await self._scripts["report"](keys=[f"{self.namespace}:cookie:{cookie_id}"], args=args)

    async def status(self) -> list[CookieStatus]:
        await self._register()
        now, *hashes = await self._scripts["status"](keys=self._keys, args=[self._now()])
        return [
            _from_redis(_pairs(fields)).status(cid, self.settings, float(now))
            for cid, fields in zip(self.cookie_ids, hashes, strict=True)
        ]

    async def aclose(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisCookiePool({self._where}, namespace={self.namespace!r}, {len(self.cookie_ids)} cookies)"

    def __reduce__(self) -> tuple:
        # Handed to crawl actors: each process opens its own connection (a test clock does not travel).
        return (RedisCookiePool, (self._url, self.settings, self.cookie_ids, self.namespace))

    async def _register(self) -> None:
        # Idempotent, so concurrent first calls may both run it.
        if not self._registered:
            await self._scripts["register"](keys=self._keys, args=[])
            self._registered = True

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _from_redis(fields: dict[str, str]) -> _Cookie:
    cookie = _Cookie(
        dead=fields["state"] == "dead",
        cooldown_until=float(fields["cooldown_until"]),
        failures=int(fields["failures"]),
        expired=int(fields["expired"]),
    )
    columns = {"tokens": cookie.tokens, "stamp": cookie.stamps, "granted": cookie.granted}
    columns["throttled"] = cookie.throttled
    for name, value in fields.items():
        kind, _, host = name.partition(":")
        if host:
            columns[kind][host] = int(value) if kind in ("granted", "throttled") else float(value)
    return cookie


def _redacted(url: str) -> str:
    """host:port/db of a Redis URL, without the password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


# --- Ray actor backend ---------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class CookiePoolActor:
    """`PoolState` on the actor's monotonic clock. Its methods are sync, so Ray runs them one at a
    time: each call is atomic without locks."""

    def __init__(self, settings: PoolSettings, cookie_ids: list[str]) -> None:
        self._state = PoolState(settings)
        self._state.register(cookie_ids)

    def register(self, settings: PoolSettings, cookie_ids: list[str]) -> None:
        if settings != self._state.settings:
            raise ValueError("this cookie pool actor already runs with other PoolSettings: use another name")
        self._state.register(cookie_ids)

    def acquire(self, host: str, among: list[str]) -> Grant:
        return self._state.acquire(host, among, time.monotonic())

    def report(self, cookie_id: str, host: str, outcome: str) -> None:
        self._state.report(cookie_id, host, outcome, time.monotonic())

    def status(self, among: list[str]) -> list[CookieStatus]:
        return self._state.status(among, time.monotonic())


class ActorCookiePool(CookiePool):
    """Client of a `CookiePoolActor`; picklable, so it can be handed to crawl actors."""

    def __init__(
        self, actor: ray.actor.ActorHandle, settings: PoolSettings, cookie_ids: Sequence[str], name: str
    ) -> None:
        self.settings = settings
        self.cookie_ids = _checked_ids(cookie_ids)
        self.name = name
        self._actor = actor

    async def acquire(self, host: str) -> Grant:
        self.settings.rate_for(host)
        return await self._actor.acquire.remote(host, self.cookie_ids)

    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None:
        self._check_report(cookie_id, host, outcome)
        await self._actor.report.remote(cookie_id, host, outcome)

    async def status(self) -> list[CookieStatus]:
        return await self._actor.status.remote(self.cookie_ids)

    def __repr__(self) -> str:
        return f"ActorCookiePool(name={self.name!r}, {len(self.cookie_ids)} cookies)"


def create_cookie_pool(
    settings: PoolSettings, cookie_ids: Sequence[str], redis_url: str | None = None, name: str = DEFAULT_NAME
) -> CookiePool:
    """The Redis pool when `redis_url` is given (`name` is its key namespace), else a client of the
    named `CookiePoolActor` (got, or created in the current Ray namespace).

    The actor is not detached: it belongs to whoever creates it first and ends with that process,
    so a finished or killed job leaves no stale pool behind. Call this in the driver before starting
    crawl actors, then pass them the returned pool (or let them call this with the same name).
    State that must outlive the job or the driver belongs in Redis."""
    ids = _checked_ids(cookie_ids)
    if redis_url is not None:
        return RedisCookiePool(redis_url, settings, ids, namespace=name)
    actor = CookiePoolActor.options(name=name, get_if_exists=True).remote(settings, ids)
    ray.get(actor.register.remote(settings, ids))
    return ActorCookiePool(actor, settings, ids, name)
