"""End-to-end crawls of the local Weibo simulator over real HTTP, on the suite's Ray, with both
backends (Ray actors + disk journal, and a real Redis): the tables must equal the simulator's ground
truth exactly, whatever happens on the way (faults, a killed actor, an interrupted crawl, dead
cookies), and the simulator must never count a rate-limit violation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from cluster.reports import read_report, read_success, write_success
from cluster.schemas import CRAWL_TABLES, PRIMARY_KEYS
from cluster.stage_config import RayConfig
from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import cookie_id
from crawl_actors.export import main as export_main
from crawl_actors.frontier import FrontierState, RedisFrontier
from crawl_actors.job import crawl, run
from crawl_actors.output import read_table
from crawl_actors.shared import crawl_namespace
from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator

RATES = {"search": RateLimit(40, 2), "mobile": RateLimit(60, 4), "ajax": RateLimit(60, 4), "ai": RateLimit(40, 2)}
COMPARED = ("topics", "posts", "users", "history")
# Cookie state in Redis is keyed by cookie id, shared by every crawl; the simulator's cookies repeat
# from one run to the next (seeded), so this suite keeps them apart from any other run on the same Redis.
COOKIE_NAMESPACE = f"test:cookies:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def simulator():
    """A small corpus whose hot topic still needs slicing down to cities."""
    config = SimulatorConfig(
        seed=7, num_users=24, history_posts=(10, 45), hot_topic_posts=700, topic_posts=40, rates=RATES
    )
    sim = WeiboSimulator(config)
    with sim.running():
        yield sim


@pytest.fixture()
def no_violations(simulator):
    """Every test must keep within every cookie's rate limit (counted from its own start)."""
    before = simulator.stats()["violations"]
    yield
    assert simulator.stats()["violations"] == before, "the crawl exceeded a cookie's rate limit"


@pytest.fixture(params=["actor", "redis"])
def backend(request) -> str | None:
    request.getfixturevalue("ray_local")
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


def crawl_config(sim: WeiboSimulator, output_dir: Path, cookies: list[str], redis_url: str | None = None,
                 **overrides: Any) -> CrawlConfig:
    topics = sim.topics()
    start, end = sim.search_window()
    values: dict[str, Any] = dict(
        # Both forms: the hot topic (sliced down to cities) as a plain keyword, the others as hashtags.
        keywords=[t.name if t.hot else t.query for t in topics],
        start=start,
        end=end,
        cookies=SecretStr("\n".join(cookies)),
        redis_url=SecretStr(redis_url) if redis_url else None,
        cookie_namespace=COOKIE_NAMESPACE,
        endpoints={host: sim.base_url for host in ("search", "mobile", "ajax", "ai")},
        rates={host: {"rate": limit.rate, "burst": limit.burst} for host, limit in RATES.items()},
        cooldown_s=0.2,
        cooldown_max_s=1.0,
        max_pause_s=3.0,
        history_days=None,
        max_posts_per_user=1000,
        max_pages_per_user=100,
        output_dir=output_dir,
        num_actors=2,
        concurrency_per_actor=8,
        request_timeout_s=10,
        lease_s=20,
        ray=RayConfig(include_dashboard=False),
    )
    values.update(overrides)
    return CrawlConfig(**values)


def table_rows(output_dir: Path, name: str) -> list[dict[str, Any]]:
    fields = [f for f in CRAWL_TABLES[name].names if f != "crawled_at"]
    return [{f: row[f] for f in fields} for row in read_table(output_dir, name).to_pylist()]


def truth_rows(sim: WeiboSimulator, name: str) -> list[dict[str, Any]]:
    fields = [f for f in CRAWL_TABLES[name].names if f != "crawled_at"]
    return [{f: row.get(f) for f in fields} for row in sim.ground_truth()[name]]


def assert_equals_ground_truth(sim: WeiboSimulator, output_dir: Path) -> None:
    for name in COMPARED:
        keys = PRIMARY_KEYS[name]
        got = {tuple(row[k] for k in keys): row for row in table_rows(output_dir, name)}
        want = {tuple(row[k] for k in keys): row for row in truth_rows(sim, name)}
        assert len(got) == len(table_rows(output_dir, name)), f"{name}: duplicate keys"
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        assert not missing and not extra, (
            f"{name}: {len(missing)} missing {missing[:3]}, {len(extra)} extra {extra[:3]}")
        wrong = [(key, got[key], want[key]) for key in want if got[key] != want[key]]
        assert not wrong, f"{name}: {len(wrong)} rows differ, e.g. {wrong[0]}"


def requests_so_far(sim: WeiboSimulator) -> int:
    return sim.stats()["requests"]


def test_a_full_crawl_reproduces_the_ground_truth(simulator, no_violations, backend, tmp_path: Path) -> None:
    config = crawl_config(simulator, tmp_path / "crawl", simulator.new_cookies(4), backend)
    summary = crawl(config, progress=False)
    assert summary.stop_reason is None
    assert_equals_ground_truth(simulator, tmp_path / "crawl")
    report = read_report(tmp_path / "crawl")  # what the demo reads of a finished crawl
    assert report["rows"] == summary.rows and report["rows"]["history"] == len(truth_rows(simulator, "history"))
    assert (report["requests"], report["retries"], report["errors"]) == (summary.requests, summary.retries,
                                                                         summary.errors)
    assert report["requests"] > 0 and report["seconds"] > 0
    levels = Counter(row["kind"] for row in table_rows(tmp_path / "crawl", "errors"))
    assert not levels, f"a clean crawl recorded errors: {levels}"
    assert read_table(tmp_path / "crawl", "topics").column("news").null_count == 0  # AI search brought the news


def test_faults_cost_retries_not_data(simulator, no_violations, backend, tmp_path: Path) -> None:
    simulator.set_faults(0.05, delay_s=0.5)
    try:
        config = crawl_config(simulator, tmp_path / "crawl", simulator.new_cookies(4), backend)
        summary = crawl(config, progress=False)
    finally:
        simulator.set_faults(0.0)
    assert summary.stop_reason is None
    assert summary.retries > 0
    assert_equals_ground_truth(simulator, tmp_path / "crawl")
    errors = read_table(tmp_path / "crawl", "errors").to_pylist()
    assert errors and {e["kind"] for e in errors} <= {"parse", "http", "network"}
    assert all(e["url"].startswith(simulator.base_url) for e in errors)


def run_in_background(config: CrawlConfig) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["summary"] = crawl(config, progress=False)
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_for_requests(sim: WeiboSimulator, more_than: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while requests_so_far(sim) <= more_than:
        assert time.monotonic() < deadline, "the crawl made no progress"
        time.sleep(0.05)


def wait_for_new_pid(actor, old_pid: int, timeout_s: float = 60) -> int:
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid = ray.get(actor.report.remote(), timeout=5)["pid"]
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            pid = old_pid
        if pid != old_pid:
            return pid
        time.sleep(0.1)
    return old_pid


def test_a_killed_crawl_actor_restarts_and_nothing_is_lost(simulator, no_violations, backend, tmp_path: Path) -> None:
    import ray

    config = crawl_config(simulator, tmp_path / "crawl", simulator.new_cookies(4), backend, lease_s=2,
                          request_timeout_s=1, flush_interval_s=0.5)
    start = requests_so_far(simulator)
    thread, outcome = run_in_background(config)
    wait_for_requests(simulator, start + 150)
    victim = ray.get_actor(f"{crawl_namespace(config)}:crawler-0")
    first_pid = ray.get(victim.report.remote())["pid"]
    ray.kill(victim, no_restart=False)
    assert wait_for_new_pid(victim, first_pid) != first_pid  # it really died and came back
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].stop_reason is None
    assert_equals_ground_truth(simulator, tmp_path / "crawl")


def frontier_counts(config: CrawlConfig, output: Path):
    """The crawl's frontier as it is now, read from its journal (Ray actor backend) or from Redis."""
    if config.redis_url is None:
        return FrontierState(output.resolve() / "_frontier" / "journal.jsonl").counts()
    frontier = RedisFrontier(config.redis_url.get_secret_value(), crawl_namespace(config))

    async def counts():
        try:
            return await frontier.counts()
        finally:
            await frontier.close()

    return asyncio.run(counts())


def test_an_interrupted_crawl_resumes_without_refetching(simulator, no_violations, backend, tmp_path: Path) -> None:
    import ray

    output = tmp_path / "crawl"
    config = crawl_config(simulator, output, simulator.new_cookies(4), backend)
    start = requests_so_far(simulator)
    thread, outcome = run_in_background(config)
    wait_for_requests(simulator, start + 200)
    for i in range(config.num_actors):
        ray.get_actor(f"{crawl_namespace(config)}:crawler-{i}").stop.remote("test interrupt")
    thread.join(timeout=300)
    first = outcome["summary"]
    assert first.stop_reason == "test interrupt"
    kept = {name: len(table_rows(output, name)) for name in COMPARED}
    assert kept["history"] > 0  # what the first run collected is on disk
    journal = frontier_counts(config, output)
    assert 0 < journal.done < journal.seen

    before_second = requests_so_far(simulator)
    second = crawl(config, progress=False)
    assert second.stop_reason is None
    assert_equals_ground_truth(simulator, output)
    final = frontier_counts(config, output)
    refetch_allowance = config.num_actors * config.concurrency_per_actor  # tasks in flight at the stop
    assert requests_so_far(simulator) - before_second <= final.seen - journal.done + refetch_allowance


def test_ctrl_c_on_socialalign_crawl_keeps_the_data_and_a_rerun_finishes(simulator, no_violations, ray_local,
                                                                         tmp_path: Path) -> None:
    """As a user does it: `socialalign crawl` in a terminal, Ctrl-C, then the same command again."""
    output = tmp_path / "crawl"
    cookies = simulator.new_cookies(4)
    config = crawl_config(simulator, output, cookies)
    settings = config.model_dump(mode="json", exclude={"cookies", "redis_url"})
    settings["ray"] = {"address": ray_local.address, "include_dashboard": False}
    path = tmp_path / "crawl.yaml"
    path.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    env = {**os.environ, "SOCIALALIGN_WEIBO_COOKIES": "\n".join(cookies)}
    env.pop("RAY_ADDRESS", None)
    start = requests_so_far(simulator)
    command = subprocess.Popen([str(Path(sys.executable).parent / "socialalign"), "crawl", "--config", str(path)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_requests(simulator, start + 200, timeout_s=120)
        command.send_signal(signal.SIGINT)
        _, stderr = command.communicate(timeout=120)
    finally:
        command.kill()
    assert command.returncode == 1, stderr[-2000:]  # stopped early: not a success
    assert "letting the crawl actors flush" in stderr
    assert not any(cookie in stderr for cookie in cookies)
    journal = frontier_counts(config, output)
    assert 0 < journal.done < journal.seen
    assert read_table(output, "history").num_rows > 0  # what the first run collected is on disk

    before_second = requests_so_far(simulator)
    assert crawl(config, progress=False).stop_reason is None
    assert_equals_ground_truth(simulator, output)
    refetch_allowance = config.num_actors * config.concurrency_per_actor  # tasks in flight at Ctrl-C
    assert requests_so_far(simulator) - before_second <= frontier_counts(config, output).seen - journal.done + \
        refetch_allowance


def test_an_expired_cookie_is_taken_out_and_the_others_finish(simulator, no_violations, backend,
                                                              tmp_path: Path) -> None:
    cookies = simulator.new_cookies(3)
    simulator.expire_cookie(cookies[0])
    summary = crawl(crawl_config(simulator, tmp_path / "crawl", cookies, backend), progress=False)
    assert summary.stop_reason is None
    assert_equals_ground_truth(simulator, tmp_path / "crawl")
    blocked = [e for e in read_table(tmp_path / "crawl", "errors").to_pylist() if e["kind"] == "blocked"]
    assert 0 < len(blocked) <= 4  # one per host class at most: the pool takes the cookie out at once


def test_all_cookies_banned_stops_cleanly_and_a_new_cookie_resumes(simulator, no_violations, backend,
                                                                   tmp_path: Path) -> None:
    output = tmp_path / "crawl"
    cookies = simulator.new_cookies(2)
    config = crawl_config(simulator, output, cookies, backend)
    write_success(output, "crawl", {"rows": {}})  # left by an earlier crawl into the same directory
    start = requests_so_far(simulator)
    thread, outcome = run_in_background(config)
    wait_for_requests(simulator, start + 150)
    for cookie in cookies:
        simulator.expire_cookie(cookie)
    thread.join(timeout=300)
    summary = outcome["summary"]
    assert summary.stop_reason is not None and "cookie" in summary.stop_reason
    assert sum(len(table_rows(output, name)) for name in COMPARED) > 0  # data intact, tables merged
    assert read_success(output) is None  # a crawl that stopped early has not finished

    fresh = crawl_config(simulator, output, simulator.new_cookies(2), backend)
    assert crawl(fresh, progress=False).stop_reason is None
    assert_equals_ground_truth(simulator, output)
    assert read_report(output)["rows"]["history"] == len(truth_rows(simulator, "history"))


def test_export_writes_the_research_formats(simulator, no_violations, tmp_path: Path, ray_local) -> None:
    output = tmp_path / "crawl"
    crawl(crawl_config(simulator, output, simulator.new_cookies(4), fetch_regions=False), progress=False)
    assert export_main(["--input", str(output), "--out", str(tmp_path / "export")]) == 0
    csv_files = sorted((tmp_path / "export" / "search").glob("*.csv"))
    assert len(csv_files) == len(simulator.topics())
    header = csv_files[0].read_text(encoding="utf-8-sig").splitlines()[0]
    assert header.startswith("id,bid,user_id,用户昵称,微博正文")
    user_files = list((tmp_path / "export" / "users").glob("*.json"))
    assert len(user_files) == len(truth_rows(simulator, "users"))
    import json

    sample = json.loads(user_files[0].read_text(encoding="utf-8"))
    assert set(sample) == {"user", "weibo"} and sample["weibo"] and "full_created_at" in sample["weibo"][0]


def test_missing_cookies_and_keywords_are_config_errors(tmp_path: Path) -> None:
    from cluster.config import ConfigError

    with pytest.raises(ConfigError, match="keywords: give at least one topic to crawl"):
        crawl(CrawlConfig(output_dir=tmp_path), progress=False)
    with pytest.raises(ConfigError, match="cookies: no Weibo cookie given"):
        crawl(CrawlConfig(output_dir=tmp_path, keywords=["x"], start="2025-10-01", end="2025-10-02"), progress=False)
    with pytest.raises(ConfigError, match="searching needs a time range"):
        crawl(CrawlConfig(output_dir=tmp_path, keywords=["x"], cookies=SecretStr("SUB=sim-1")), progress=False)
    with pytest.raises(ConfigError, match="keywords: give at least one topic"):  # the runner leaves printing to the CLI
        run(CrawlConfig(output_dir=tmp_path))


def test_users_can_be_crawled_directly(simulator, no_violations, tmp_path: Path, ray_local) -> None:
    users = sorted(row["user_id"] for row in truth_rows(simulator, "users"))[:3]
    config = crawl_config(simulator, tmp_path / "crawl", simulator.new_cookies(2), keywords=[], user_ids=users)
    assert crawl(config, progress=False).stop_reason is None
    assert sorted(row["user_id"] for row in table_rows(tmp_path / "crawl", "users")) == users
    want = [row for row in truth_rows(simulator, "history") if row["user_id"] in users]
    got = table_rows(tmp_path / "crawl", "history")
    key = lambda row: (row["user_id"], row["mid"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert table_rows(tmp_path / "crawl", "posts") == []


@pytest.fixture(scope="module")
def page_numbered_simulator():
    """Timelines that name their next page by number, with total and no since_id (Weibo 2019-2021)."""
    config = SimulatorConfig(seed=11, num_users=12, history_posts=(25, 60), hot_topic_posts=60, topic_posts=20,
                             rates=RATES, timeline_paging="page")
    sim = WeiboSimulator(config)
    with sim.running():
        yield sim


def test_page_numbered_timelines_are_crawled_to_their_last_page(page_numbered_simulator, tmp_path: Path,
                                                               ray_local) -> None:
    sim = page_numbered_simulator
    before = sim.stats()["violations"]
    truth = sim.ground_truth()
    users = sorted({row["user_id"] for row in truth["history"]})
    config = crawl_config(sim, tmp_path / "crawl", sim.new_cookies(2), keywords=[], user_ids=users)
    assert crawl(config, progress=False).stop_reason is None
    fields = [f for f in CRAWL_TABLES["history"].names if f != "crawled_at"]
    want = history_by_user([{f: row.get(f) for f in fields} for row in truth["history"]])
    got = history_by_user(table_rows(tmp_path / "crawl", "history"))
    assert got == want and sum(map(len, got.values())) > 10 * len(users)  # every page: most users have 3+
    assert any(len(row["pics"]) > 9 for rows in got.values() for row in rows)  # the rest from the detail page
    assert sim.stats()["violations"] == before and table_rows(tmp_path / "crawl", "errors") == []


def history_by_user(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda row: (row["user_id"], row["mid"])):
        by_user.setdefault(row["user_id"], []).append(row)
    return by_user


@pytest.mark.parametrize("limit", ["posts", "pages", "days"])
def test_per_user_limits_keep_what_the_ground_truth_keeps(simulator, no_violations, tmp_path: Path, ray_local,
                                                          limit: str) -> None:
    """max_posts_per_user, max_pages_per_user and history_days, each small enough to cut the longest
    timelines, against the simulator's ground truth under the same limits."""
    full = history_by_user(truth_rows(simulator, "history"))
    users = sorted(full, key=lambda uid: (-len(full[uid]), uid))[:4]  # the longest timelines
    posts, pages, days = {"posts": (12, 40, None), "pages": (200, 2, None)}.get(limit, (12, 40, None))
    if limit == "days":  # a cut that leaves these users a few posts each (whole days back from now)
        created = sorted((row["created_at"] for uid in users for row in full[uid] if not row["is_pinned"]),
                         reverse=True)
        days = (datetime.now(timezone.utc) - created[6 * len(users)]).days
    config = crawl_config(simulator, tmp_path / "crawl", simulator.new_cookies(2), keywords=[], user_ids=users,
                          max_posts_per_user=posts, max_pages_per_user=pages, history_days=days,
                          fetch_long_text=True)
    began = datetime.now(timezone.utc)
    assert crawl(config, progress=False).stop_reason is None
    ended = datetime.now(timezone.utc)

    def truth(since: datetime | None) -> dict[str, list[dict[str, Any]]]:
        fields = [f for f in CRAWL_TABLES["history"].names if f != "crawled_at"]
        rows = simulator.ground_truth(max_posts_per_user=posts, max_pages_per_user=pages, since=since)["history"]
        return history_by_user([{f: row.get(f) for f in fields} for row in rows if row["user_id"] in users])

    got = history_by_user(table_rows(tmp_path / "crawl", "history"))
    if days is None:
        assert got == truth(None)
    else:  # the crawl took `now` somewhere between these two moments
        assert got in (truth(began - timedelta(days=days)), truth(ended - timedelta(days=days)))
    kept = {uid: len(got.get(uid, [])) for uid in users}
    cut = {"posts": 12, "pages": 20}.get(limit)
    if cut is not None:
        assert all(kept[uid] == min(cut, len(full[uid])) for uid in users)
        assert any(len(full[uid]) > cut for uid in users)
    else:
        assert any(0 < kept[uid] < min(12, len(full[uid])) for uid in users), kept  # some cut by age, not count


def everything_in_redis(url: str) -> str:
    """Every key and value in the Redis, as text."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    read = {"string": client.get, "hash": client.hgetall, "set": client.smembers,
            "list": lambda key: client.lrange(key, 0, -1), "zset": lambda key: client.zrange(key, 0, -1)}
    try:
        return repr({key: read[client.type(key)](key) for key in client.scan_iter("*")})
    finally:
        client.close()


def test_no_cookie_value_reaches_tables_journals_or_logs(simulator, no_violations, backend, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture, capfd) -> None:
    """After a crawl with faults and an expired cookie, no cookie value (nor its SUB token) is in any
    file the crawl wrote (Parquet read back, and raw bytes), the frontier journal or Redis, Ray's
    logs, or this process's logs and output."""
    import logging

    import pyarrow.parquet as pq
    import ray

    caplog.set_level(logging.DEBUG)
    output = tmp_path / "crawl"
    cookies = simulator.new_cookies(3)
    simulator.expire_cookie(cookies[0])
    simulator.set_faults(0.05, delay_s=0.5)
    try:
        summary = crawl(crawl_config(simulator, output, cookies, backend), progress=False)
    finally:
        simulator.set_faults(0.0)
    assert summary.stop_reason is None
    errors = read_table(output, "errors").to_pylist()
    assert any(e["kind"] == "blocked" for e in errors) and any(e["kind"] != "blocked" for e in errors)

    secrets = [value for cookie in cookies for value in (cookie, cookie.split(";")[0].split("=", 1)[1])]
    places: dict[str, str] = {}
    files = [path for path in output.rglob("*") if path.is_file()]
    assert any(path.suffix == ".parquet" for path in files)
    if backend is None:
        assert (output / "_frontier" / "journal.jsonl") in files
    for path in files:
        places[str(path)] = path.read_bytes().decode("utf-8", "replace")
        if path.suffix == ".parquet":  # compressed pages hide strings from a byte search: read them back
            places[f"{path} (rows)"] = repr(pq.read_table(path).to_pylist())
    if backend is not None:
        places["redis"] = everything_in_redis(backend)
    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
    for path in logs_dir.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    out, err = capfd.readouterr()
    places["stdout"], places["stderr"], places["log records"] = out, err, caplog.text
    leaks = [(where, secret[:12]) for where, text in places.items() for secret in secrets if secret in text]
    assert not leaks, f"cookie values found in {[where for where, _ in leaks]}"
    # The search reached where the crawl logs: the expired cookie's warning names it, by its id only.
    expired_id = cookie_id(cookies[0])
    assert any(expired_id in text for where, text in places.items() if where in ("stderr", "log records")
               or where.startswith(str(logs_dir))), "the cookie pool's warnings were not found in any log searched"
