"""The cookie pool against a real redis-server and a real Ray actor: every behaviour on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import ray
import redis

from crawl_actors.config import CookiePacing, RateLimit
from crawl_actors.cookies import (
    CookieJar,
    CookiePool,
    Grant,
    NoUsableCookie,
    PoolState,
    RedisCookiePool,
    cookie_id,
    create_cookie_pool,
)

SECRET = "2A25SECRETq9"
VALUES = [f"SUB=_{SECRET}{i}xWk; SUBP=0033WrSXqPxfM725Ws9jqgMF55529P9D9W{i}" for i in range(4)]
IDS = [cookie_id(v) for v in VALUES]
FAST = {"mobile": RateLimit(100.0, 5), "search": RateLimit(100.0, 5)}

MakePool = Callable[[CookiePacing, list[str]], CookiePool]


@pytest.fixture(params=["redis", "actor"])
def make_pool(request: pytest.FixtureRequest) -> Iterator[MakePool]:
    """Pools of one test share a fresh namespace (Redis) or actor name (Ray): a second call reattaches."""
    name = f"test-cookies-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        yield lambda settings, ids: RedisCookiePool(url, settings, ids, namespace=name)
        return
    request.getfixturevalue("ray_local")
    yield lambda settings, ids: create_cookie_pool(settings, ids, name=name)
    with contextlib.suppress(ValueError):  # gone already when the test dropped every handle
        ray.kill(ray.get_actor(name))


def by_id(statuses: list) -> dict:
    return {s.cookie_id: s for s in statuses}


def test_rate_limit_holds_and_spreads_under_concurrent_acquirers(make_pool: MakePool) -> None:
    cookies, rate, burst, window_s = 3, 10.0, 2, 2.0

    async def hammer() -> tuple[Counter, Counter, float, list]:
        pool = make_pool(CookiePacing(rates={"mobile": RateLimit(rate, burst)}, max_pause_s=5), IDS[:cookies])
        granted, in_window = Counter(), Counter()
        start = time.monotonic()
        end = start + window_s

        async def acquirer() -> None:
            while time.monotonic() < end:
                cid = await pool.acquire_wait("mobile")
                granted[cid] += 1
                in_window[cid] += time.monotonic() <= end

        await asyncio.gather(*(acquirer() for _ in range(24)))
        elapsed = time.monotonic() - start
        statuses = await pool.status()
        await pool.aclose()
        return granted, in_window, elapsed, statuses

    granted, in_window, elapsed, statuses = asyncio.run(hammer())
    assert set(granted) == set(IDS[:cookies])
    for status in statuses:
        assert status.granted["mobile"] == granted[status.cookie_id]
        assert granted[status.cookie_id] <= burst + rate * elapsed
        assert in_window[status.cookie_id] >= 0.8 * rate * window_s, "load is not spread across cookies"
    assert sum(in_window.values()) >= 0.9 * cookies * rate * window_s


def test_two_crawls_sharing_a_cookie_on_redis_share_its_rate(redis_url: str) -> None:
    """Weibo limits a cookie, not a crawl: two crawls (two crawl ids, as `socialalign crawl` names them)
    that use the same cookie through the same Redis must together keep to its rate."""
    from pydantic import SecretStr

    from crawl_actors.config import CrawlConfig
    from crawl_actors.cookies import DEFAULT_NAME
    from crawl_actors.shared import crawl_namespace, open_cookie_pool

    assert CrawlConfig().cookie_namespace == DEFAULT_NAME
    rate, burst, window_s = 10.0, 2, 2.0
    value = f"SUB=_{SECRET}{uuid.uuid4().hex}"
    shared = f"test-cookies-{uuid.uuid4().hex[:8]}"  # stands for DEFAULT_NAME, fresh for this test
    configs = [CrawlConfig(crawl_id=f"crawl-{i}-{uuid.uuid4().hex[:6]}", cookie_namespace=shared,
                           cookies=SecretStr(value), redis_url=SecretStr(redis_url),
                           rates={"mobile": {"rate": rate, "burst": burst}}, max_pause_s=5)
               for i in range(2)]

    async def hammer() -> tuple[list[int], float]:
        pools = [open_cookie_pool(config, CookieJar([value]).ids, crawl_namespace(config)) for config in configs]
        granted = [0, 0]
        start = time.monotonic()

        async def acquirer(which: int) -> None:
            while time.monotonic() < start + window_s:
                await pools[which].acquire_wait("mobile")
                granted[which] += 1

        await asyncio.gather(*(acquirer(i % 2) for i in range(16)))
        elapsed = time.monotonic() - start
        for pool in pools:
            await pool.aclose()
        return granted, elapsed

    granted, elapsed = asyncio.run(hammer())
    assert min(granted) > 0, "one crawl got nothing"
    assert sum(granted) <= burst + rate * elapsed, f"two crawls together got {granted} in {elapsed:.2f}s"
    assert sum(granted) >= 0.8 * rate * window_s


def test_throttle_cools_down_on_every_host_with_exponential_backoff(make_pool: MakePool) -> None:
    settings = CookiePacing(rates=FAST, cooldown_s=0.2, cooldown_factor=2, cooldown_max_s=0.5, max_pause_s=2)
    a, b = IDS[:2]

    async def scenario() -> None:
        pool = make_pool(settings, [a, b])

        async def cooldown_of_a(expected_failures: int) -> float:
            status = by_id(await pool.status())[a]
            assert status.state == "cooling" and status.consecutive_failures == expected_failures
            return status.cooldown_left_s

        await pool.report(a, "mobile", "throttled")
        assert 0.1 < await cooldown_of_a(1) <= 0.2
        grants = [await pool.acquire(host) for host in ["mobile", "search"] * 4]
        assert {g.cookie_id for g in grants} == {b}, "a cooling cookie was granted"
        await pool.report(a, "search", "throttled")  # a reply to a request sent before the cooldown
        assert await cooldown_of_a(1) <= 0.2

        await asyncio.sleep(0.25)
        assert a in {(await pool.acquire("search")).cookie_id for _ in range(4)}
        await pool.report(a, "search", "throttled")
        assert 0.3 < await cooldown_of_a(2) <= 0.4
        await asyncio.sleep(0.45)
        await pool.report(a, "mobile", "throttled")
        assert 0.4 < await cooldown_of_a(3) <= 0.5  # 0.8 s capped at cooldown_max_s
        await asyncio.sleep(0.55)
        await pool.report(a, "mobile", "ok")
        assert by_id(await pool.status())[a].consecutive_failures == 0
        await pool.report(a, "mobile", "throttled")
        assert 0.1 < await cooldown_of_a(1) <= 0.2
        assert by_id(await pool.status())[a].throttled == {"mobile": 3, "search": 2}
        await pool.aclose()

    asyncio.run(scenario())


def test_acquire_wait_sleeps_through_a_short_cooldown_and_gives_up_on_a_long_one(make_pool: MakePool) -> None:
    async def scenario(backoff_s: float) -> tuple[str | Exception, float]:
        settings = CookiePacing(rates=FAST, cooldown_s=backoff_s, cooldown_max_s=backoff_s, max_pause_s=0.5)
        pool = make_pool(settings, IDS[:2])
        for cid in IDS[:2]:
            await pool.report(cid, "mobile", "throttled")
        start = time.monotonic()
        try:
            result: str | Exception = await pool.acquire_wait("search")
        except NoUsableCookie as error:
            result = error
        await pool.aclose()
        return result, time.monotonic() - start

    granted, waited = asyncio.run(scenario(0.3))
    assert granted in IDS[:2] and 0.2 < waited < 0.5
    error, waited = asyncio.run(scenario(30.0))
    assert isinstance(error, NoUsableCookie) and waited < 0.2
    assert "max_pause_s=0.5" in error.reason and "0 of 2 not cooling" in error.reason


def test_expired_cookie_is_out_for_good_and_all_expired_fails_at_once(make_pool: MakePool) -> None:
    async def scenario() -> None:
        pool = make_pool(CookiePacing(rates=FAST), IDS[:3])
        await pool.report(IDS[0], "mobile", "expired")
        await pool.report(IDS[0], "mobile", "ok")
        assert by_id(await pool.status())[IDS[0]].state == "dead"
        grants = Counter([(await pool.acquire("mobile")).cookie_id for _ in range(8)])
        assert set(grants) == {IDS[1], IDS[2]}
        assert await pool.usable_count() == 2

        for cid in IDS[1:3]:
            await pool.report(cid, "search", "expired")
        assert await pool.acquire("mobile") == Grant(None, float("inf"))
        start = time.monotonic()
        with pytest.raises(NoUsableCookie, match="all 3 cookies are dead"):
            await pool.acquire_wait("mobile")
        assert time.monotonic() - start < 0.1
        assert await pool.usable_count() == 0
        await pool.aclose()

    asyncio.run(scenario())


def test_clear_errors(make_pool: MakePool) -> None:
    async def scenario() -> None:
        pool = make_pool(CookiePacing(rates=FAST), IDS[:2])
        with pytest.raises(ValueError, match="unknown host class 'weibo.com'"):
            await pool.acquire("weibo.com")
        with pytest.raises(ValueError, match=f"unknown cookie id '{IDS[3]}'"):
            await pool.report(IDS[3], "mobile", "ok")
        with pytest.raises(ValueError, match="unknown outcome 'banned'"):
            await pool.report(IDS[0], "mobile", "banned")  # type: ignore[arg-type]
        await pool.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rates": {"search": {"rate": 0, "burst": 1}}}, r"rates\.search\.rate\s+Input should be greater than 0"),
        ({"rates": {"ai": {"rate": 1.0, "burst": 0}}}, r"rates\.ai\.burst\s+Input should be greater than or equal"),
        ({"rates": {}}, r"rates\s+Dictionary should have at least 1 item"),
        ({"cooldown_s": 0}, r"cooldown_s\s+Input should be greater than 0"),
        ({"cooldown_max_s": 1}, "cooldown_max_s must be >= cooldown_s"),
        ({"cooldown_factor": 0.5}, r"cooldown_factor\s+Input should be greater than or equal to 1"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CookiePacing(**kwargs)


def test_redis_state_survives_recreating_the_pool(redis_url: str) -> None:
    namespace = f"test-cookies-{uuid.uuid4().hex[:8]}"
    settings = CookiePacing(rates={"search": RateLimit(0.05, 1)})

    async def scenario() -> None:
        async with RedisCookiePool(redis_url, settings, IDS[:2], namespace=namespace) as first:
            assert (await first.acquire("search")).cookie_id == IDS[0]
            await first.report(IDS[1], "search", "expired")
        # A restarted crawl actor, with one more cookie in its config.
        async with RedisCookiePool(redis_url, settings, IDS[:3], namespace=namespace) as second:
            states = {s.cookie_id: s.state for s in await second.status()}
            assert states == {IDS[0]: "ok", IDS[1]: "dead", IDS[2]: "ok"}
            assert (await second.acquire("search")).cookie_id == IDS[2]
            empty = await second.acquire("search")
            assert empty.cookie_id is None and empty.retry_after_s > 15, "tokens were reset on restart"
        flushed = redis.Redis.from_url(redis_url)
        flushed.delete(*flushed.keys(f"{namespace}:*"))
        flushed.close()
        async with RedisCookiePool(redis_url, settings, IDS[:3], namespace=namespace) as after_flush:
            after_flush._registered = True  # a pool object that registered before Redis lost its data
            with pytest.raises(redis.ResponseError, match="missing from Redis"):
                await after_flush.acquire("search")

    asyncio.run(scenario())


def test_lua_and_python_state_machines_agree_on_a_random_sequence(redis_url: str) -> None:
    settings = CookiePacing(
        rates={"search": RateLimit(0.5, 2), "mobile": RateLimit(3.0, 1)}, cooldown_s=1, cooldown_factor=2,
        cooldown_max_s=6,
    )
    ids, rng, clock = IDS, random.Random(7), [1_000_000.0]
    python = PoolState(settings)
    python.register(ids)
    seen: Counter = Counter()

    async def scenario() -> None:
        namespace = f"test-cookies-{uuid.uuid4().hex[:8]}"
        async with RedisCookiePool(redis_url, settings, ids, namespace=namespace, clock=lambda: clock[0]) as lua:
            for _ in range(400):
                clock[0] += rng.choice([0.0, rng.expovariate(3.0)])
                host = rng.choice(["search", "mobile"])
                if rng.random() < 0.6:
                    expected = python.acquire(host, ids, clock[0])
                    assert await lua.acquire(host) == expected
                    seen["granted" if expected.cookie_id else "refused"] += 1
                else:
                    cid = rng.choice(ids)
                    outcome = rng.choices(["ok", "throttled", "expired"], [0.55, 0.43, 0.02])[0]
                    python.report(cid, host, outcome, clock[0])
                    await lua.report(cid, host, outcome)
                statuses = python.status(ids, clock[0])
                assert await lua.status() == statuses
                seen.update(s.state for s in statuses)

    asyncio.run(scenario())
    assert all(seen[kind] > 10 for kind in ["granted", "refused", "ok", "cooling", "dead"]), seen


def test_no_cookie_value_leaks(make_pool: MakePool, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    jar = CookieJar(VALUES)
    texts = [repr(jar), str(jar)]

    async def scenario() -> None:
        pool = make_pool(CookiePacing(rates=FAST, max_pause_s=0), jar.ids)
        texts.append(repr(pool))
        grant = await pool.acquire("mobile")
        assert jar.header(grant.cookie_id) == VALUES[0]
        texts.append(repr(grant))
        await pool.report(grant.cookie_id, "mobile", "ok")
        for cid, outcome in zip(jar.ids, ["throttled", "throttled", "expired", "expired"], strict=True):
            await pool.report(cid, "mobile", outcome)
        texts.append(repr(await pool.status()))
        with pytest.raises(NoUsableCookie) as no_cookie:
            await pool.acquire_wait("mobile")
        with pytest.raises(ValueError) as value_as_id:
            make_pool(CookiePacing(), [*jar.ids, VALUES[0]])
        with pytest.raises(ValueError) as value_reported:
            await pool.report(VALUES[1], "mobile", "ok")
        texts.extend([str(no_cookie.value), str(value_as_id.value), str(value_reported.value)])
        await pool.aclose()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    with pytest.raises(KeyError) as not_in_jar:
        jar.header(VALUES[0] + "x")
    texts.extend([str(not_in_jar.value), caplog.text])
    assert "expired on mobile" in caplog.text
    texts.extend(_everything_in_redis(redis_url))
    assert not [text for text in texts if SECRET in text]


def _everything_in_redis(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    readers = {"string": client.get, "hash": client.hgetall, "list": lambda k: client.lrange(k, 0, -1)}
    dump = []
    for key in client.scan_iter():
        dump += [key, repr(readers.get(client.type(key), lambda k: "")(key))]
    client.close()
    assert any(":cookie:" in key for key in dump)
    return dump


def test_actor_pool_is_shared_by_name_and_refuses_other_settings(ray_local: object) -> None:
    name = f"test-cookies-{uuid.uuid4().hex[:8]}"
    settings = CookiePacing(rates=FAST)
    first = create_cookie_pool(settings, IDS[:2], name=name)
    second = create_cookie_pool(settings, IDS[:3], name=name)
    try:
        asyncio.run(first.report(IDS[0], "mobile", "expired"))
        assert [s.state for s in asyncio.run(second.status())] == ["dead", "ok", "ok"]
        grants = {asyncio.run(first.acquire("mobile")).cookie_id for _ in range(4)}
        assert grants == {IDS[1]}, "a client was granted a cookie its jar does not hold"
        with pytest.raises(ValueError, match="other rates or cooldowns"):
            create_cookie_pool(CookiePacing(rates={"mobile": RateLimit(1.0, 1)}), IDS[:2], name=name)
    finally:
        ray.kill(ray.get_actor(name))


def test_cookie_jar() -> None:
    jar = CookieJar.from_lines(f"# accounts\n{VALUES[0]}\n\n  {VALUES[1]}  \n")
    assert jar.ids == IDS[:2] and len(jar) == 2
    assert jar.header(IDS[1]) == VALUES[1]
    assert repr(jar) == f"CookieJar(2 cookies: {IDS[0]}, {IDS[1]})"
    assert CookieJar([VALUES[0], VALUES[0]]).ids == IDS[:1]
    with pytest.raises(ValueError, match="cookie #1 is empty"):
        CookieJar([VALUES[0], " "])
