"""The cookie pool in Redis: state changed only by Lua scripts that read Redis `TIME` (one clock for
all nodes), so it survives actor and driver restarts and is shared by every crawl on that Redis.

Keys: "<ns>:cursor" (int, rotates the scan start), "<ns>:cookie:<id>" (hash: state ok|dead,
cooldown_until, failures, expired, tokens:<host>, stamp:<host>, granted:<host>, throttled:<host>).
Numbers are written with %.17g so that they round-trip exactly, as the Python state keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from crawl_actors.config import CookiePacing
from crawl_actors.cookies.jar import checked_ids
from crawl_actors.cookies.state import CookiePool, CookieState, CookieStatus, Grant, Outcome

DEFAULT_NAME = "socialalign:cookies"

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

# KEYS: cookie hash; ARGV: host, outcome, cooldown_s, cooldown_factor, cooldown_max_s, now override.
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
        pacing: CookiePacing,
        cookie_ids: Sequence[str],
        namespace: str = DEFAULT_NAME,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.pacing = pacing.pacing()
        self.cookie_ids = checked_ids(cookie_ids)
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
        limit = self.pacing.rate_for(host)
        await self._register()
        keys = [f"{self.namespace}:cursor", *self._keys]
        args = [host, repr(limit.rate), limit.burst, self._now()]
        index, wait = await self._scripts["acquire"](keys=keys, args=args)
        if int(index):
            return Grant(self.cookie_ids[int(index) - 1])
        return Grant(None, float(wait))

    async def report(self, cookie_id: str, host: str, outcome: Outcome) -> None:
        self._check_report(cookie_id, host, outcome)
        await self._register()
        p = self.pacing
        args = [host, outcome, repr(p.cooldown_s), repr(p.cooldown_factor), repr(p.cooldown_max_s), self._now()]
        await self._scripts["report"](keys=[f"{self.namespace}:cookie:{cookie_id}"], args=args)

    async def status(self) -> list[CookieStatus]:
        await self._register()
        now, *hashes = await self._scripts["status"](keys=self._keys, args=[self._now()])
        return [
            _from_redis(_pairs(fields)).status(cid, self.pacing, float(now))
            for cid, fields in zip(self.cookie_ids, hashes, strict=True)
        ]

    async def aclose(self) -> None:
        await self._redis.aclose()

    def __repr__(self) -> str:
        return f"RedisCookiePool({self._where}, namespace={self.namespace!r}, {len(self.cookie_ids)} cookies)"

    def __reduce__(self) -> tuple:
        # A copy opens its own connection (a test clock does not travel).
        return (RedisCookiePool, (self._url, self.pacing, self.cookie_ids, self.namespace))

    async def _register(self) -> None:
        # Idempotent, so concurrent first calls may both run it.
        if not self._registered:
            await self._scripts["register"](keys=self._keys, args=[])
            self._registered = True

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _from_redis(fields: dict[str, str]) -> CookieState:
    cookie = CookieState(
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


