"""One crawl worker in this process, over real HTTP on 127.0.0.1, against a scripted server: what it
does with bad pages, throttling, blocks and the Date header. The cookie pool and the frontier are
small in-memory stand-ins (the real ones are tested in test_cookies.py and test_frontier.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cluster.http_thread import serve_in_thread
from crawl_actors import tasks as crawl_tasks
from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import CookieJar, NoUsableCookie, cookie_id
from crawl_actors.frontier import FrontierState, Task
from crawl_actors.output import finalize, read_table
from crawl_actors.tasks import user_tasks
from crawl_actors.worker import CrawlWorker, served_time

COOKIE = "SUB=worker-test-cookie; SUBP=worker-test"
NOTHING_HERE = {"ok": 0, "msg": "这里还没有内容", "data": {"cards": []}}
SCOPE = dict(fetch_details=False, fetch_long_text=False, fetch_regions=False)


def profile(uid: str, followers: object = "1万") -> dict:
    return {"ok": 1, "data": {"userInfo": {"id": int(uid), "screen_name": f"u{uid}", "followers_count": followers}}}


def mblog(uid: str, mid: str, created_at: str, pic_num: object = 0) -> dict:
    return {"id": mid, "bid": f"B{mid}", "created_at": created_at, "text": f"帖子 {mid}", "pic_num": pic_num,
            "user": {"id": int(uid)}, "reposts_count": 0, "comments_count": 0, "attitudes_count": 0}


def timeline(*mblogs: dict) -> dict:
    return {"ok": 1, "data": {"cardlistInfo": {"total": len(mblogs)},
                              "cards": [{"card_type": 9, "mblog": m} for m in mblogs]}}


class ScriptedWeibo:
    """getIndex answers per containerid: a list of (status, body, headers) served in turn, the last
    one for ever after; anything not scripted is the end-of-list reply."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, object, dict[str, str]]]] = {}
        self.served: dict[str, int] = defaultdict(int)
        self.times: dict[str, list[float]] = defaultdict(list)  # monotonic time of each request

    def on(self, containerid: str, *answers: tuple[int, object] | tuple[int, object, dict[str, str]]) -> None:
        self.script[containerid] = [(a[0], a[1], a[2] if len(a) > 2 else {}) for a in answers]

    async def get_index(self, request: web.Request) -> web.Response:
        containerid = request.query.get("containerid", "")
        if request.query.get("since_id"):
            containerid += f"&since_id={request.query['since_id']}"
        elif request.query.get("page", "1") != "1":
            containerid += f"&page={request.query['page']}"
        self.times[containerid].append(time.monotonic())
        answers = self.script.get(containerid, [(200, NOTHING_HERE, {})])
        status, body, headers = answers[min(self.served[containerid], len(answers) - 1)]
        self.served[containerid] += 1
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        if headers.get("X-Chunked"):  # no Content-Length: the size is known only by reading
            stream = web.StreamResponse(status=status)
            stream.content_type = "application/json"
            stream.enable_chunked_encoding()
            await stream.prepare(request)
            for start in range(0, len(text), 1000):
                await stream.write(text[start : start + 1000].encode())
            await stream.write_eof()
            return stream
        return web.Response(status=status, text=text, headers=headers, content_type="application/json")

    @property
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/container/getIndex", self.get_index)
        return app


class OneCookiePool:
    """Always grants the one cookie (no rates here), and records what the worker reports."""

    def __init__(self, usable: bool = True) -> None:
        self.usable = usable
        self.reports: list[str] = []

    async def acquire_wait(self, host: str) -> str:
        if not self.usable:
            raise NoUsableCookie("all 1 cookies are dead (test)")
        return cookie_id(COOKIE)

    async def report(self, cid: str, host: str, outcome: str) -> None:
        self.reports.append(outcome)


class MemoryFrontier:
    """The frontier's state machine without a journal, behind the async interface workers use."""

    def __init__(self, seed: list[Task]) -> None:
        self.state = FrontierState(None)
        self.state.add(seed)

    async def lease(self, count: int, lease_s: float) -> list[Task]:
        return self.state.lease(count, lease_s, 0.0)

    async def add(self, tasks: list[Task]) -> int:
        return self.state.add(tasks)

    async def complete(self, task_ids: list[str]) -> None:
        self.state.complete(task_ids)

    async def retry(self, task: Task, counted: bool = True) -> None:
        self.state.retry(task, counted)

    async def renew(self, task: Task, lease_s: float) -> bool:
        return self.state.renew(task.id, task.lease, lease_s, 0.0)

    async def counts(self):
        return self.state.counts()


class ClockFrontier(MemoryFrontier):
    """The same, on the real clock: leases expire as they do in the real backends."""

    async def lease(self, count: int, lease_s: float) -> list[Task]:
        return self.state.lease(count, lease_s, time.monotonic())

    async def renew(self, task: Task, lease_s: float) -> bool:
        return self.state.renew(task.id, task.lease, lease_s, time.monotonic())


@pytest.fixture()
def weibo() -> Iterator[tuple[ScriptedWeibo, str]]:
    server = ScriptedWeibo()
    with serve_in_thread(server.app, "127.0.0.1", 0, name="scripted-weibo") as url:
        yield server, url


def crawl_users(url: str, output: Path, uids: list[str], pool: Any = None, **settings: Any) -> tuple[dict, Any]:
    values = dict(output_dir=output, endpoints={"mobile": url}, **SCOPE, concurrency_per_actor=2,
                  max_attempts=2, flush_interval_s=0.0, idle_poll_s=0.01, request_timeout_s=5)
    values.update(settings)
    config = CrawlConfig(**values)
    frontier = MemoryFrontier([task for uid in uids for task in user_tasks(uid, config)])
    worker = CrawlWorker("w0", config, CookieJar([COOKIE]), pool or OneCookiePool(), frontier)
    report = asyncio.run(asyncio.wait_for(worker.run(), timeout=60))
    finalize(output)
    return report, frontier


def errors_of(output: Path) -> list[dict]:
    return read_table(output, "errors").to_pylist()


def test_bad_pages_and_a_handler_bug_are_error_rows_and_the_crawl_finishes(weibo, tmp_path: Path, monkeypatch) -> None:
    server, url = weibo
    server.on("1005051", (200, profile("1", followers="很多")))
    server.on("1076031", (200, timeline(mblog("1", "11", "Wed Jun 16 20:07:07 +0800 2021", pic_num="x"),
                                        mblog("1", "12", "Wed Jun 16 20:00:00 +0800 2021"))))
    server.on("1005052", (200, profile("2")))
    broken_handler = crawl_tasks._HANDLERS["profile"]

    def handler_with_a_bug(task, body, page_url, now, config):
        if task.params["uid"] == "2":
            raise RuntimeError("a bug in a handler")
        return broken_handler(task, body, page_url, now, config)

    monkeypatch.setitem(crawl_tasks._HANDLERS, "profile", handler_with_a_bug)
    report, frontier = crawl_users(url, tmp_path, ["1", "2"])

    assert report["stop_reason"] is None and frontier.state.counts().drained
    assert [row["mid"] for row in read_table(tmp_path, "history").to_pylist()] == ["12"]  # the good mblog stays
    errors = errors_of(tmp_path)
    by_url = defaultdict(list)
    for row in errors:
        by_url[re.search(r"containerid=(\d+)", row["url"])[1]].append(row)
    assert [(r["kind"], r["status"]) for r in by_url["1005051"]] == [("parse", 200), ("gave_up", 200)]
    assert "很多" in by_url["1005051"][0]["message"] and by_url["1005051"][0]["snippet"].startswith('{"ok": 1')
    assert [r["kind"] for r in by_url["1005052"]] == ["parse", "gave_up"]
    assert "unexpected RuntimeError: a bug in a handler" in by_url["1005052"][0]["message"]
    assert [r["kind"] for r in by_url["1076031"]] == ["parse"] and "'x'" in by_url["1076031"][0]["message"]


def test_throttling_and_5xx_do_not_use_up_attempts(weibo, tmp_path: Path) -> None:
    server, url = weibo
    refusals = [(418, "<html><head><title>418</title></head></html>"), (503, "<h1>503</h1>")] * 2
    server.on("1005053", *refusals, (200, profile("3")))
    pool = OneCookiePool()
    report, frontier = crawl_users(url, tmp_path, ["3"], pool=pool, max_attempts=2)

    assert report["stop_reason"] is None and frontier.state.counts().drained
    assert [row["user_id"] for row in read_table(tmp_path, "users").to_pylist()] == ["3"]
    errors = errors_of(tmp_path)
    assert [(e["kind"], e["status"]) for e in errors] == [("http", 418), ("http", 503)] * 2
    assert all("retrying" in e["message"] and "deferrals" in e["message"] for e in errors)
    assert pool.reports.count("throttled") == 4


def test_a_page_that_always_fails_with_5xx_is_given_up_after_max_deferrals(weibo, tmp_path: Path) -> None:
    server, url = weibo
    server.on("1005054", (502, "<h1>502</h1>"))
    report, frontier = crawl_users(url, tmp_path, ["4"], max_deferrals=3)

    assert report["stop_reason"] is None and frontier.state.counts().drained
    kinds = [(e["kind"], e["status"]) for e in errors_of(tmp_path)]
    assert kinds == [("http", 502), ("http", 502), ("gave_up", 502)]
    assert server.served["1005054"] == 3


def test_blocked_answers_keep_their_http_status_in_the_errors_table(weibo, tmp_path: Path) -> None:
    server, url = weibo
    visitor = {"Location": "https://passport.weibo.com/visitor/visitor?entry=miniblog&retcode=6102"}
    server.on("1005055", (302, "", visitor), (200, {"ok": -100, "url": "https://passport.weibo.cn/signin"}),
              (200, profile("5")))
    pool = OneCookiePool()
    crawl_users(url, tmp_path, ["5"], pool=pool, max_attempts=1)

    assert [row["user_id"] for row in read_table(tmp_path, "users").to_pylist()] == ["5"]
    assert [(e["kind"], e["status"]) for e in errors_of(tmp_path)] == [("blocked", 302), ("blocked", 200)]
    assert pool.reports.count("expired") == 2


def test_no_usable_cookie_stops_the_worker_and_costs_the_task_no_attempt(weibo, tmp_path: Path) -> None:
    _, url = weibo
    report, frontier = crawl_users(url, tmp_path, ["6"], pool=OneCookiePool(usable=False), concurrency_per_actor=1)

    assert report["stop_reason"] == "all 1 cookies are dead (test)" and report["requests"] == 0
    waiting = [frontier.state.tasks[task_id] for task_id in frontier.state.pending]
    assert waiting and all(task.attempts == 0 for task in waiting)
    assert sum(task.deferrals for task in waiting) == 1


def test_relative_times_count_from_the_date_header(weibo, tmp_path: Path) -> None:
    server, url = weibo
    served = {"Date": "Wed, 01 May 2024 04:00:00 GMT"}
    server.on("1076037", (200, timeline(mblog("7", "71", "刚刚"), mblog("7", "72", "5分钟前")), served))
    crawl_users(url, tmp_path, ["7"])

    history = {row["mid"]: row["created_at"] for row in read_table(tmp_path, "history").to_pylist()}
    assert history == {"71": datetime(2024, 5, 1, 4, 0, tzinfo=timezone.utc),
                       "72": datetime(2024, 5, 1, 3, 55, tzinfo=timezone.utc)}


def test_served_time_falls_back_to_the_local_clock() -> None:
    assert served_time("Wed, 01 May 2024 04:00:00 GMT") == datetime(2024, 5, 1, 4, tzinfo=timezone.utc)
    assert served_time("Wed, 01 May 2024 12:00:00 +0800") == datetime(2024, 5, 1, 4, tzinfo=timezone.utc)
    for missing in (None, "", "yesterday"):
        assert abs((served_time(missing) - datetime.now(timezone.utc)).total_seconds()) < 5


def test_timeline_pages_by_since_id_and_ends_at_total(weibo, tmp_path: Path) -> None:
    server, url = weibo
    first = timeline(mblog("8", "81", "Wed Jun 16 20:07:07 +0800 2021"))
    first["data"]["cardlistInfo"].update(since_id=82, total=2)
    second = timeline(mblog("8", "82", "Wed Jun 16 20:00:00 +0800 2021"))
    second["data"]["cardlistInfo"].update(total=2)
    server.on("1076038", (200, first))
    server.on("1076038&since_id=82", (200, second))
    crawl_users(url, tmp_path, ["8"])

    assert sorted(row["mid"] for row in read_table(tmp_path, "history").to_pylist()) == ["81", "82"]
    assert (server.served["1076038"], server.served["1076038&since_id=82"]) == (1, 1)
    assert sum(server.served.values()) == 3  # profile, two timeline pages: total reached, no third ask


def page_numbered(uid: str, page: int, mids: list[str], total: int) -> dict:
    """A timeline page in the real page-numbered shape (nonebot-bison's weibo_ys_list_0.json, 2021):
    cardlistInfo {containerid, v_p, show_style, total, page: the next page's number}, no since_id."""
    info = {"containerid": f"107603{uid}", "v_p": 42, "show_style": 1, "total": total, "page": page + 1}
    shown = f"Wed Jun {16 - page:02d} 20:00:00 +0800 2021"
    cards = [{"card_type": 9, "itemid": f"107603{uid}_-_{mid}", "mblog": mblog(uid, mid, shown)} for mid in mids]
    return {"ok": 1, "data": {"cardlistInfo": info, "cards": cards,
                              "scheme": f"sinaweibo://cardlist?containerid=107603{uid}", "showAppTips": 0}}


def test_a_page_numbered_timeline_is_followed_page_by_page_until_total(weibo, tmp_path: Path) -> None:
    server, url = weibo
    pages = [[f"9{page}{i}" for i in range(10 if page < 3 else 3)] for page in (1, 2, 3)]
    server.on("1076039", (200, page_numbered("9", 1, pages[0], 23)))
    server.on("1076039&page=2", (200, page_numbered("9", 2, pages[1], 23)))
    server.on("1076039&page=3", (200, page_numbered("9", 3, pages[2], 23)))
    crawl_users(url, tmp_path, ["9"])

    assert sorted(row["mid"] for row in read_table(tmp_path, "history").to_pylist()) == sorted(sum(pages, []))
    assert [server.served[f"1076039{p}"] for p in ("", "&page=2", "&page=3", "&page=4")] == [1, 1, 1, 0]


def test_a_timeline_without_paging_info_goes_on_until_an_empty_page(weibo, tmp_path: Path) -> None:
    server, url = weibo
    post = mblog("10", "101", "Wed Jun 16 20:00:00 +0800 2021")
    bare = {"ok": 1, "data": {"cards": [{"card_type": 9, "mblog": post}]}}
    server.on("10760310", (200, bare))
    crawl_users(url, tmp_path, ["10"])
    assert [server.served[f"10760310{p}"] for p in ("", "&page=2", "&page=3")] == [1, 1, 0]  # page 2: 没有内容


def test_a_task_waiting_for_a_cookie_longer_than_its_lease_is_fetched_once(weibo, tmp_path: Path) -> None:
    server, url = weibo
    server.on("10050511", (200, profile("11")))

    class SlowPool(OneCookiePool):
        waits = [2.0, 1.45]  # three leases long: the pool is busy (throttled cookies)

        async def acquire_wait(self, host: str) -> str:
            await asyncio.sleep(self.waits.pop(0) if self.waits else 1.45)
            return cookie_id(COOKIE)

    # Were the lease not renewed, a second loop would take the task at 0.6 s and be granted a cookie at
    # ~2.05 s, while the first one fetches at 2.0 s and marks it done only at its next flush.
    config = CrawlConfig(output_dir=tmp_path, endpoints={"mobile": url}, **SCOPE, concurrency_per_actor=3,
                         lease_s=0.6, request_timeout_s=0.3, flush_interval_s=0.25, idle_poll_s=0.02)
    frontier = ClockFrontier([Task("profile", "11", {"uid": "11"})])
    worker = CrawlWorker("w0", config, CookieJar([COOKIE]), SlowPool(), frontier)
    asyncio.run(asyncio.wait_for(worker.run(), timeout=30))
    finalize(tmp_path)

    assert server.served["10050511"] == 1 and frontier.state.counts().drained
    assert [row["user_id"] for row in read_table(tmp_path, "users").to_pylist()] == ["11"]


def test_a_lease_that_cannot_cover_a_request_and_its_flush_is_a_config_error() -> None:
    from cluster.config import ConfigError, load_config

    with pytest.raises(ConfigError) as error:
        load_config(CrawlConfig, overrides=["lease_s=20", "request_timeout_s=20"])
    assert "lease_s" in str(error.value) and "request_timeout_s" in str(error.value)
    assert load_config(CrawlConfig, overrides=["lease_s=30", "request_timeout_s=20"]).lease_s == 30


@pytest.mark.parametrize("chunked", [False, True])
def test_an_oversized_response_is_an_error_row_naming_the_limit(weibo, tmp_path: Path, chunked: bool) -> None:
    server, url = weibo
    huge = profile("12")
    huge["data"]["userInfo"]["description"] = "长" * 20_000
    server.on("10050512", (200, huge, {"X-Chunked": "1"} if chunked else {}))
    server.on("10050513", (200, profile("13")))
    report, frontier = crawl_users(url, tmp_path, ["12", "13"], max_response_bytes=16_384)

    assert report["stop_reason"] is None and frontier.state.counts().drained
    assert [row["user_id"] for row in read_table(tmp_path, "users").to_pylist()] == ["13"]
    (error,) = errors_of(tmp_path)
    assert error["kind"] == "too_large" and "max_response_bytes=16384" in error["message"]
    assert server.served["10050512"] == 1  # not retried: it would be as large again


def test_a_slow_parse_does_not_stall_the_other_requests(weibo, tmp_path: Path, monkeypatch) -> None:
    server, url = weibo
    uids = [str(n) for n in range(20, 26)]
    for uid in uids:
        server.on(f"100505{uid}", (200, profile(uid)))
    parse, window = crawl_tasks._HANDLERS["profile"], {}

    def slow_for_20(task, body, page_url, now, config):
        if task.params["uid"] == "20":
            window["start"] = time.monotonic()
            time.sleep(1.5)  # a pathological page: blocking, CPU-bound work
            window["end"] = time.monotonic()
        return parse(task, body, page_url, now, config)

    monkeypatch.setitem(crawl_tasks._HANDLERS, "profile", slow_for_20)
    crawl_users(url, tmp_path, uids, concurrency_per_actor=2)

    during = [t for uid in uids[1:] for t in server.times[f"100505{uid}"] if window["start"] < t < window["end"]]
    assert len(during) >= 3, "the other requests waited for the slow parse"
    assert sorted(row["user_id"] for row in read_table(tmp_path, "users").to_pylist()) == uids


def test_hostile_ids_from_responses_are_error_rows_never_requests(weibo, tmp_path: Path) -> None:
    server, url = weibo
    evil = mblog("14", "141", "Wed Jun 16 20:00:00 +0800 2021")
    evil.update(id="141/../../../evil?x=", isLongText=True)
    page = timeline(evil, mblog("14", "142", "Wed Jun 16 19:00:00 +0800 2021"))
    page["data"]["cardlistInfo"] = {"total": 50, "since_id": "1@evil.example/"}
    server.on("10760314", (200, page))
    config_scope = {**SCOPE, "fetch_long_text": True}
    config = CrawlConfig(output_dir=tmp_path, endpoints={"mobile": url}, **config_scope, concurrency_per_actor=2,
                         flush_interval_s=0.0, idle_poll_s=0.01, request_timeout_s=5)
    seed = [*user_tasks("14", config), Task("profile", "x", {"uid": "15@evil.example"})]
    worker = CrawlWorker("w0", config, CookieJar([COOKIE]), OneCookiePool(), MemoryFrontier(seed))
    asyncio.run(asyncio.wait_for(worker.run(), timeout=30))
    finalize(tmp_path)

    assert set(server.served) == {"10050514", "10760314"}  # nothing else was asked for, of any host
    errors = errors_of(tmp_path)
    assert sorted(e["kind"] for e in errors) == ["bad_id", "parse", "parse"]
    assert any("since_id" in e["message"] for e in errors) and any("mid" in e["message"] for e in errors)
    assert any("15@evil.example" in e["message"] and e["kind"] == "bad_id" for e in errors)


def test_part_files_and_their_directory_are_on_disk_before_their_tasks_are_done(weibo, tmp_path, monkeypatch):
    server, url = weibo
    server.on("10050516", (200, profile("16")))
    events: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:  # a power cut cannot be simulated: record which file or directory is synced
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    class Recording(MemoryFrontier):
        async def complete(self, task_ids: list[str]) -> None:
            events.extend(("done", task_id) for task_id in task_ids)
            await super().complete(task_ids)

    monkeypatch.setattr(os, "fsync", spy)
    config = CrawlConfig(output_dir=tmp_path, endpoints={"mobile": url}, **SCOPE, flush_interval_s=0.0,
                         idle_poll_s=0.01, request_timeout_s=5)
    frontier = Recording([Task("profile", "16", {"uid": "16"})])
    asyncio.run(asyncio.wait_for(CrawlWorker("w0", config, CookieJar([COOKIE]), OneCookiePool(), frontier).run(), 30))

    users_dir = str(tmp_path / "_parts" / "users")
    (part,) = [str(path) for path in (tmp_path / "_parts" / "users").glob("*.parquet")]
    done = events.index(("done", "profile|16"))
    synced = [path for kind, path in events[:done] if kind == "fsync"]
    assert any(path.startswith(users_dir + "/.") for path in synced)  # the file's bytes (under its temp name)
    assert users_dir in synced and part not in synced  # then the directory, after the rename, before 'done'


def test_a_stop_during_the_flushers_flush_still_marks_its_tasks_done(weibo, tmp_path: Path, monkeypatch) -> None:
    server, url = weibo
    server.on("10050530", (200, profile("30")))

    class StopsOnSecond(OneCookiePool):
        calls = 0

        async def acquire_wait(self, host: str) -> str:
            self.calls += 1
            if self.calls == 1:
                return cookie_id(COOKIE)
            await asyncio.sleep(0.6)  # meanwhile the flusher (every 0.3 s) is writing profile 30's rows
            raise NoUsableCookie("all 1 cookies are dead (test)")

    from crawl_actors.output import PartWriter

    write = PartWriter.flush

    def slow_write(self, batch=None):
        time.sleep(1.0)  # a slow disk
        return write(self, batch)

    monkeypatch.setattr(PartWriter, "flush", slow_write)
    config = CrawlConfig(output_dir=tmp_path, endpoints={"mobile": url}, **SCOPE, concurrency_per_actor=1,
                         flush_every_tasks=1000, flush_interval_s=0.3, idle_poll_s=0.01, request_timeout_s=5)
    frontier = MemoryFrontier([Task("profile", "30", {"uid": "30"}), Task("profile", "31", {"uid": "31"})])
    report = asyncio.run(asyncio.wait_for(CrawlWorker("w0", config, CookieJar([COOKIE]), StopsOnSecond(),
                                                      frontier).run(), 30))
    assert report["stop_reason"] == "all 1 cookies are dead (test)"
    assert "profile|30" in frontier.state.done  # its rows were written, and it is marked done
    finalize(tmp_path)
    assert [row["user_id"] for row in read_table(tmp_path, "users").to_pylist()] == ["30"]
