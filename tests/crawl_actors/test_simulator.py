"""The Weibo simulator over real HTTP: what it serves parses (crawl_actors.parsers) back to its ground truth."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import parsel
import pyarrow as pa
import pytest

from cluster.schemas import HISTORY, POSTS, TOPICS, USERS
from crawl_actors import parsers
from crawl_actors.regions import PROVINCES, city_codes
from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator, cookie_hash, unlimited_rates
from crawl_actors.simulator.lexicon import NEGATIVE_WORDS, POSITIVE_WORDS, TOPIC_TEMPLATES

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
NOW = datetime(2026, 1, 5, 4, 0, tzinfo=timezone.utc)
SMALL = {"num_users": 30, "history_posts": (10, 40), "topic_posts": 60}  # the hot topic keeps its 1200 posts
TINY = {"num_users": 6, "history_posts": (3, 8), "hot_topic_posts": 40, "topic_posts": 20, "num_topics": 2}
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]
    url: str

    @property
    def served_at(self) -> datetime:
        return parsedate_to_datetime(self.headers["Date"])


async def _get(session: aiohttp.ClientSession, url: str, follow: bool = True) -> Reply:
    async with session.get(url, allow_redirects=follow) as response:
        # As the crawler's worker decodes: a body cut by a fault may end inside a character.
        body = (await response.read()).decode(response.charset or "utf-8", errors="replace")
        return Reply(response.status, body, dict(response.headers), str(response.url))


def _session(cookie: str | None, user_agent: str | None = BROWSER) -> aiohttp.ClientSession:
    headers = {"User-Agent": user_agent} if user_agent else {}
    if cookie:
        headers["Cookie"] = cookie
    return aiohttp.ClientSession(headers=headers)


def fetch(
    urls: Iterable[str], cookie: str | None, user_agent: str | None = BROWSER, follow: bool = True
) -> list[Reply]:
    """GET the URLs concurrently (8 at a time) with a browser's headers."""
    async def run() -> list[Reply]:
        gate = asyncio.Semaphore(8)
        async with _session(cookie, user_agent) as session:
            async def one(url: str) -> Reply:
                async with gate:
                    return await _get(session, url, follow)
            return await asyncio.gather(*(one(url) for url in urls))
    return asyncio.run(run())


def search_url(
    sim: WeiboSimulator, name: str, timescope: str, region: str | None = None, page: int | None = None
) -> str:
    url = f"{sim.base_url}/weibo?q={quote('#' + name + '#')}&scope=ori&suball=1&timescope={timescope}"
    if region:
        url += f"&region=custom:{region}"
    return url + (f"&page={page}" if page else "")


def crawl_searches(start_urls: list[str], cookie: str) -> list[list[parsers.SearchPage]]:
    """Follow a.next from each start URL (the starts run concurrently); the parsed pages of each."""
    async def follow(session: aiohttp.ClientSession, url: str | None) -> list[parsers.SearchPage]:
        pages = []
        while url:
            reply = await _get(session, url)
            page = parsers.parse_search_page(reply.body, url, reply.served_at)
            assert not page.errors, page.errors
            pages.append(page)
            url = page.next_url
        return pages

    async def run() -> list[list[parsers.SearchPage]]:
        async with _session(cookie) as session:
            return await asyncio.gather(*(follow(session, url) for url in start_urls))
    return asyncio.run(run())


def posts_of(pages: list[parsers.SearchPage]) -> list[dict]:
    return [post for page in pages for post in page.posts]


def truth_without_query(rows: Iterable[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("query", "found_by", "region")} for row in rows]


@pytest.fixture(scope="module")
def sim() -> WeiboSimulator:
    simulator = WeiboSimulator(SimulatorConfig(seed=3, rates=unlimited_rates(), now=NOW, **SMALL))
    with simulator.running():
        yield simulator


@pytest.fixture(scope="module")
def truth(sim: WeiboSimulator) -> dict[str, list[dict]]:
    return sim.ground_truth()


@pytest.fixture(scope="module")
def cookie(sim: WeiboSimulator) -> str:
    return sim.new_cookies(1)[0]


# ---------------------------------------------------------------------------------------------
# Search


def test_search_round_trip_for_every_small_topic(sim, truth, cookie) -> None:
    topics = [topic for topic in sim.topics() if not topic.hot]
    crawled = crawl_searches([search_url(sim, t.name, t.timescope) for t in topics], cookie)
    for topic, pages in zip(topics, crawled, strict=True):
        expected = [row for row in truth["posts"] if row["query"] == topic.name]
        assert posts_of(pages) == truth_without_query(expected)
        assert pages[0].page_count == len(pages) == -(-len(expected) // 10) and pages[0].layout == "current"
        regions = fetch([f"{sim.base_url}/ajax/statuses/show?id={row['bid']}" for row in expected], cookie)
        assert [parsers.parse_region(reply.body, reply.url) for reply in regions] == [row["region"] for row in expected]


def test_a_plain_keyword_search_finds_the_posts_whose_text_holds_it(sim, truth, cookie) -> None:
    topic = next(topic for topic in sim.topics() if not topic.hot)
    keyword_url = f"{sim.base_url}/weibo?q={quote(topic.name)}&scope=ori&suball=1&timescope={topic.timescope}"
    by_keyword, by_hashtag = crawl_searches([keyword_url, search_url(sim, topic.name, topic.timescope)], cookie)
    expected = truth_without_query(row for row in truth["posts"] if row["query"] == topic.name)
    assert posts_of(by_keyword) == posts_of(by_hashtag) == expected  # a topic's name is in its posts only
    assert '<em class="s-color-red">' in fetch([keyword_url], cookie)[0].body  # the query is marked
    word = next(text for text in expected[0]["text"].split("#") if text.strip()).strip()[:4]  # its own words
    (pages,) = crawl_searches([keyword_url.replace(quote(topic.name), quote(word))], cookie)
    found = posts_of(pages)
    assert found and all(word in post["text"] for post in found)
    empty = fetch([keyword_url.replace(quote(topic.name), quote("没有这个词的帖子"))], cookie)[0]
    assert parsers.parse_search_page(empty.body, empty.url, empty.served_at).empty


def test_search_round_trip_2020_layout_and_this_years_dates() -> None:
    probe = WeiboSimulator(SimulatorConfig(seed=3, **SMALL))
    last = probe.topics()[-1]
    now = last.end + timedelta(hours=2)  # 02:00 in Beijing: the topic's last day shows as 昨天 HH:MM
    config = SimulatorConfig(seed=3, search_layout="2020", rates=unlimited_rates(), now=now, **SMALL)
    layout_2020 = WeiboSimulator(config)
    expected = [row for row in layout_2020.ground_truth()["posts"] if row["query"] == last.name]
    with layout_2020.running():
        cookie = layout_2020.new_cookies(1)[0]
        [pages] = crawl_searches([search_url(layout_2020, last.name, last.timescope)], cookie)
        first, final = fetch([search_url(layout_2020, last.name, last.timescope, page=n) for n in (1, len(pages))],
                             cookie)
    assert all(page.layout == "2020" for page in pages)
    assert posts_of(pages) == truth_without_query(expected)
    shown = [text.strip() for reply in (first, final)
             for text in parsel.Selector(reply.body).xpath("//p[@class='from']/a[1]/text()").getall()]
    assert shown[0].startswith("昨天 ") and re.fullmatch(r"10月\d\d日 \d\d:\d\d", shown[-1]), shown
    # The research crawler's XPaths (2020 layout) read the same cards.
    cards = parsel.Selector(first.body).xpath("//div[@class='card-wrap']")
    assert len(cards) == 10 and cards[0].xpath("@mid").get() == expected[0]["mid"]
    time_link = cards[0].xpath("(.//p[@class='from'])[last()]/a[1]/@href").get()
    assert time_link.split("/")[-1].split("?")[0] == expected[0]["bid"]
    assert cards[0].xpath(".//div[@class='info']/div[2]/a/@nick-name").get() == expected[0]["screen_name"]


def test_current_layout_matches_the_research_crawlers_xpaths(sim, truth, cookie) -> None:
    topic = sim.topics()[1]
    body = fetch([search_url(sim, topic.name, topic.timescope)], cookie)[0].body
    expected = [row for row in truth["posts"] if row["query"] == topic.name][:10]
    cards = parsel.Selector(body).xpath("//div[@class='card-wrap']")
    info = [card.xpath("div[@class='card']/div[@class='card-feed']/div[@class='content']/div[@class='info']")
            for card in cards]
    assert all(info) and len(cards) == 10
    assert [c.xpath(".//div[@class='from']/a[1]/@href").get().split("/")[-1].split("?")[0] for c in cards] == [
        row["bid"] for row in expected]
    assert [i[0].xpath("div[2]/a/@href").get().split("?")[0].split("/")[-1] for i in info] == [
        row["user_id"] for row in expected]
    assert len(parsel.Selector(body).xpath("//ul[@class='s-scroll']/li")) == -(-len(
        [r for r in truth["posts"] if r["query"] == topic.name]) // 10)


def test_hot_topic_needs_slicing_down_to_cities(sim, truth, cookie) -> None:
    hot = next(topic for topic in sim.topics() if topic.hot)
    peak_start = hot.start + timedelta(hours=20)
    peak = f"custom:{_hour(peak_start)}:{_hour(peak_start + timedelta(hours=1))}"
    whole, last, beyond, peak_all, peak_beijing = fetch([
        search_url(sim, hot.name, hot.timescope), search_url(sim, hot.name, hot.timescope, page=50),
        search_url(sim, hot.name, hot.timescope, page=51), search_url(sim, hot.name, peak),
        search_url(sim, hot.name, peak, region="11:1000")], cookie)
    pages = [parsers.parse_search_page(reply.body, reply.url, reply.served_at)
             for reply in (whole, last, beyond, peak_all, peak_beijing)]
    assert [page.page_count for page in pages] == [50, 50, 0, 50, 50]
    assert pages[0].next_url and pages[1].next_url is None and len(pages[1].posts) == 10 and pages[2].empty
    cities = crawl_searches([search_url(sim, hot.name, peak, region=f"11:{city}") for city in city_codes(11)], cookie)
    assert all(len(city) < 30 for city in cities)
    in_peak = [row for row in truth["posts"] if row["query"] == hot.name
               and peak_start <= row["created_at"] < peak_start + timedelta(hours=1)]
    beijing = [row for row in in_peak if row["region"] == "北京"]
    assert len(beijing) > 500
    assert sorted(p["mid"] for city in cities for p in posts_of(city)) == sorted(row["mid"] for row in beijing)
    other = next(row["region"] for row in in_peak if row["region"] != "北京")
    code = next(code for code, (name, _) in PROVINCES.items() if name == other)
    [elsewhere] = crawl_searches([search_url(sim, hot.name, peak, region=f"{code}:1000")], cookie)
    assert posts_of(elsewhere) == truth_without_query(row for row in in_peak if row["region"] == other)


def _hour(moment: datetime) -> str:
    local = moment.astimezone(timezone(timedelta(hours=8)))
    return f"{local:%Y-%m-%d}-{local.hour}"


# ---------------------------------------------------------------------------------------------
# m.weibo.cn, weibo.com ajax, AI search


def test_profiles_and_details_round_trip(sim, truth, cookie) -> None:
    users = truth["users"]
    base = f"{sim.base_url}/api/container/getIndex?containerid="
    replies = fetch([base + f"100505{u['user_id']}" for u in users]
                    + [base + f"230283{u['user_id']}_-_INFO" for u in users], cookie)
    profiles, details = replies[: len(users)], replies[len(users):]
    merged = []
    for profile, detail in zip(profiles, details, strict=True):
        row = parsers.parse_profile(profile.body, profile.url)
        shown = parsers.parse_details(detail.body, detail.url)
        merged.append({**row, **{key: shown.get(key) for key in parsers.DETAIL_ITEMS.values()}})
    assert merged == users
    assert any(isinstance(u, str) and u.endswith("万") for u in _followers_shown(profiles))
    unknown = fetch([base + "1005051234567890", base + "1076031234567890"], cookie)
    assert parsers.parse_profile(unknown[0].body, unknown[0].url) is None
    assert parsers.parse_timeline(unknown[1].body, unknown[1].url, NOW).end


def _followers_shown(replies: list[Reply]) -> list[object]:
    return [json.loads(reply.body)["data"]["userInfo"]["followers_count"] for reply in replies]


def crawl_timelines(sim: WeiboSimulator, cookie: str, uids: list[str], by_since_id: bool) -> list[list[dict]]:
    """Users' whole histories (concurrently), long posts expanded through both long-text endpoints."""
    async def one(session: aiohttp.ClientSession, uid: str) -> list[dict]:
        rows, page_number, since_id = [], 1, None
        while True:
            cursor = f"&since_id={since_id}" if by_since_id and since_id else f"&page={page_number}"
            reply = await _get(session, f"{sim.base_url}/api/container/getIndex?containerid=107603{uid}{cursor}")
            page = parsers.parse_timeline(reply.body, reply.url, reply.served_at)
            assert not page.errors
            if page.end:
                return rows
            for post in page.posts:
                if post["mid"] in page.needs_long_text:
                    full = await _long_text(session, sim, post["mid"])
                    post.update(text=full.text, topics=full.topics, at_users=full.at_users)
                if post["mid"] in page.needs_pictures:  # the list shows 9 pictures, the detail page all
                    detail = await _get(session, f"{sim.base_url}/detail/{post['mid']}")
                    post.update(pics=parsers.parse_detail_page(detail.body, detail.url).pics)
            rows.extend(page.posts)
            page_number, since_id = page_number + 1, page.since_id
            assert (page.since_id is None) == (sim.config.timeline_paging == "page" or len(rows) == page.total)
            assert (page.next_page == page_number) == (sim.config.timeline_paging == "page")
            if by_since_id and since_id is None:
                return rows

    async def run() -> list[list[dict]]:
        async with _session(cookie) as session:
            return await asyncio.gather(*(one(session, uid) for uid in uids))
    return asyncio.run(run())


async def _long_text(session: aiohttp.ClientSession, sim: WeiboSimulator, mid: str) -> parsers.RichText:
    extend = await _get(session, f"{sim.base_url}/statuses/extend?id={mid}")
    detail = await _get(session, f"{sim.base_url}/detail/{mid}")
    full = parsers.parse_long_text(extend.body, extend.url)
    assert parsers.parse_long_text(detail.body, detail.url) == full
    assert parsers.parse_long_text_extend(extend.body, extend.url) == full.text
    assert parsers.parse_long_text_detail(detail.body, detail.url) == full.text
    return full


def test_timelines_round_trip(sim, truth, cookie) -> None:
    history = truth["history"]
    uids = [user["user_id"] for user in truth["users"]]
    expected = [[row for row in history if row["user_id"] == uid] for uid in uids]
    assert crawl_timelines(sim, cookie, uids, by_since_id=False) == expected
    pinned = [uid for uid, rows in zip(uids, expected, strict=True) if rows[0]["is_pinned"]]
    assert pinned and crawl_timelines(sim, cookie, pinned, by_since_id=True) == [
        rows for uid, rows in zip(uids, expected, strict=True) if uid in pinned]
    for feature in ("is_pinned", "is_long_text", "retweet_id", "pics", "video_url", "at_users", "topics"):
        assert any(row[feature] for row in history), feature
    assert any(len(row["pics"]) > 9 for row in history)
    cards = [s for p in sim.corpus.posts.values() if p.uid in uids for s in p.segments if s.kind.endswith("_card")]
    assert {s.kind for s in cards} == {"video_card", "live_card"}
    past_end = fetch([f"{sim.base_url}/api/container/getIndex?containerid=230413{uids[0]}&page=999"], cookie)[0]
    assert parsers.parse_timeline(past_end.body, past_end.url, NOW).end


def test_ground_truth_applies_crawl_limits_like_a_crawler(sim, truth) -> None:
    since = datetime(2025, 6, 1, tzinfo=timezone.utc)
    limited = sim.ground_truth(max_posts_per_user=7, max_pages_per_user=2, since=since)
    assert limited["posts"] == truth["posts"] and limited["users"] == truth["users"]
    for user in truth["users"]:
        full = [row for row in truth["history"] if row["user_id"] == user["user_id"]]
        kept = [row for row in full[:20] if row["created_at"] >= since][:7]
        assert [row for row in limited["history"] if row["user_id"] == user["user_id"]] == kept


def test_ai_search_round_trip(sim, truth, cookie) -> None:
    by_key = {(row["query"], row["mid"]): row for row in truth["posts"]}
    for topic, news in ((row["topic"], row["news"]) for row in truth["topics"]):
        cited, page_number, has_more = [], 1, True
        while has_more:
            url = f"{sim.base_url}/web/other/ai/blogs2?dt=1700000000&query={quote(topic)}&page={page_number}"
            reply = fetch([url], cookie)[0]
            page = parsers.parse_ai_search(reply.body, reply.url)
            assert page.summary == news
            cited += page.posts
            page_number, has_more = page_number + 1, page.has_more
        assert len(cited) == min(30, sum(1 for key in by_key if key[0] == topic))
        for post in cited:
            row = by_key[(topic, post["mid"])]
            assert [post[key] for key in ("user_id", "screen_name", "text")] == [
                row[key] for key in ("user_id", "screen_name", "text")]
    unknown = fetch([f"{sim.base_url}/web/other/ai/blogs2?dt=1&query=nothing"], cookie)[0]
    assert parsers.parse_ai_search(unknown.body, unknown.url) == parsers.AiSearchPage(None, [], False)


# ---------------------------------------------------------------------------------------------
# The ground truth itself


def test_ground_truth_rows_fit_the_schemas(truth) -> None:
    for name, schema in (("topics", TOPICS), ("posts", POSTS), ("users", USERS), ("history", HISTORY)):
        fields = [field for field in schema if field.name != "crawled_at"]
        table = pa.Table.from_pylist(truth[name], schema=pa.schema(fields))
        assert table.num_rows == len(truth[name]) > 0
        assert all(list(row) == table.column_names for row in truth[name])
    texts = [row["text"] for row in truth["posts"] + truth["history"]] + [row["news"] for row in truth["topics"]]
    assert all(parsers.clean_text(text) == text and "\n" not in text for text in texts)
    assert len({(row["query"], row["mid"]) for row in truth["posts"]}) == len(truth["posts"])
    assert len({(row["user_id"], row["mid"]) for row in truth["history"]}) == len(truth["history"])
    assert {row["user_id"] for row in truth["users"]} == {row["user_id"] for row in truth["posts"]}
    assert all(row["created_at"].second == 0 for row in truth["posts"])
    assert {row["user_verified"] for row in truth["posts"]} >= {"蓝V", "普通用户"}
    assert any(row["location"] for row in truth["posts"])
    assert any(row["attitudes_count"] >= 10_000 for row in truth["posts"])


def test_traits_shape_what_users_write(truth) -> None:
    traits = {row["user_id"]: row for row in truth["traits"]}
    category = {row["topic"]: None for row in truth["topics"]}
    sim_topics = WeiboSimulator(SimulatorConfig(seed=3, **SMALL)).topics()
    category.update({topic.name: topic.category for topic in sim_topics})
    positive = {"pro": [0, 0], "con": [0, 0]}  # [positive words, negative words]
    for row in truth["posts"]:
        stance = traits[row["user_id"]]["stances"][category[row["query"]]]
        side = "pro" if stance > 0.5 else "con" if stance < -0.5 else None
        if side:
            positive[side][0] += sum(row["text"].count(word) for word in POSITIVE_WORDS)
            positive[side][1] += sum(row["text"].count(word) for word in NEGATIVE_WORDS)
    share = {side: pos / max(1, pos + neg) for side, (pos, neg) in positive.items()}
    assert share["pro"] > 0.65 and share["con"] < 0.35, share
    own_phrase = [any(p in row["text"] for p in traits[row["user_id"]]["pet_phrases"]) for row in truth["history"]]
    assert sum(own_phrase) / len(own_phrase) > 0.5
    lengths = {}
    for row in truth["history"]:
        if row["retweet_id"] is None:
            lengths.setdefault(row["user_id"], []).append(len(row["text"]))
    ordered = sorted(lengths, key=lambda uid: traits[uid]["typical_length"])
    short, long_ = ordered[: len(ordered) // 3], ordered[-len(ordered) // 3 :]
    mean = lambda uids: sum(sum(lengths[u]) / len(lengths[u]) for u in uids) / len(uids)  # noqa: E731
    assert mean(long_) > 1.5 * mean(short)


def test_config_is_validated() -> None:
    for bad in ({"search_layout": "2019"}, {"num_topics": len(TOPIC_TEMPLATES) + 1}, {"fault_kinds": ("fire",)},
                {"history_posts": (5, 2)},
                {"now": datetime(2025, 10, 7, tzinfo=timezone.utc)}, {"hot_topic_posts": 14000},
                {"timeline_paging": "cursor"}):
        with pytest.raises(ValueError, match="SimulatorConfig"):
            WeiboSimulator(SimulatorConfig(**{**TINY, **bad}))


def test_same_seed_same_bytes_other_seed_other_corpus() -> None:
    first, second = (WeiboSimulator(SimulatorConfig(seed=5, now=NOW, rates=unlimited_rates(), **TINY))
                     for _ in range(2))
    other = WeiboSimulator(SimulatorConfig(seed=6, now=NOW, **TINY))
    assert first.ground_truth() == second.ground_truth() != other.ground_truth()
    truth = first.ground_truth()
    post, user = truth["posts"][0], truth["users"][0]
    long_post = next((row for row in truth["history"] if row["is_long_text"]), truth["history"][0])
    topic = first.topics()[0]
    paths = [
        f"/weibo?q={quote(topic.query)}&scope=ori&suball=1&timescope={topic.timescope}",
        f"/api/container/getIndex?containerid=100505{user['user_id']}",
        f"/api/container/getIndex?containerid=230283{user['user_id']}_-_INFO",
        f"/api/container/getIndex?containerid=107603{user['user_id']}&page=1",
        f"/detail/{long_post['mid']}", f"/statuses/extend?id={long_post['mid']}",
        f"/ajax/statuses/show?id={post['bid']}", f"/web/other/ai/blogs2?dt=1&query={quote(topic.name)}",
    ]
    bodies = []
    for simulator in (first, second):
        with simulator.running():
            replies = fetch([simulator.base_url + path for path in paths], simulator.new_cookies(1)[0])
            bodies.append([(reply.status, reply.body) for reply in replies])
    assert bodies[0] == bodies[1] and all(status == 200 for status, _ in bodies[0])


# ---------------------------------------------------------------------------------------------
# Blocks: cookies, user agents, rates, faults


@pytest.fixture()
def tiny() -> WeiboSimulator:
    simulator = WeiboSimulator(SimulatorConfig(seed=1, now=NOW, rates=unlimited_rates(), **TINY))
    with simulator.running():
        yield simulator


def test_cookie_states_and_bot_agents(tiny) -> None:
    uid = tiny.ground_truth()["users"][0]["user_id"]
    topic = tiny.topics()[0]
    search = search_url(tiny, topic.name, topic.timescope)
    profile = f"{tiny.base_url}/api/container/getIndex?containerid=100505{uid}"
    good, doomed = tiny.new_cookies(2)
    assert good.startswith("SUB=sim-") and "SUBP=sim-" in good and "SUB=_2" not in good

    for unknown in (None, "SUB=sim-nobody; SUBP=sim-x"):
        redirect = fetch([search], unknown, follow=False)[0]
        visitor, refused = fetch([search, profile], unknown)
        assert redirect.status == 302 and "/visitor/visitor?entry=miniblog&a=enter&url=" in redirect.headers["Location"]
        assert "retcode=6102" in redirect.headers["Location"]
        assert visitor.status == 200 and parsers.is_visitor_page(visitor.body)
        with pytest.raises(parsers.Blocked, match="visitor_page"):
            parsers.parse_search_page(visitor.body, visitor.url, visitor.served_at)
        assert refused.status == 432
        with pytest.raises(parsers.Blocked, match="bot_rejected"):
            parsers.parse_profile(refused.body, refused.url)

    assert [r.status for r in fetch([search, profile], good, user_agent=None)] == [432, 432]  # aiohttp's own UA
    assert [r.status for r in fetch([profile], good, user_agent="python-requests/2.32")] == [432]
    assert parsers.parse_profile(fetch([profile], good)[0].body, profile)["user_id"] == uid

    tiny.expire_cookie(doomed)
    moved, refused = fetch([search, profile], doomed, follow=False)
    assert moved.status == 302 and "/visitor/visitor" in moved.headers["Location"]
    with pytest.raises(parsers.Blocked) as login:
        parsers.parse_profile(refused.body, refused.url)
    assert refused.status == 200 and login.value.reason == "login_required"
    assert fetch([profile], good)[0].status == 200
    tiny.ban_all()
    assert fetch([search], good, follow=False)[0].status == 302
    assert '"ok": -100' in fetch([profile], good)[0].body


def test_rate_limits_count_only_real_violations() -> None:
    rates = {**unlimited_rates(), "mobile": RateLimit(20.0, 1), "search": RateLimit(5.0, 2)}
    simulator = WeiboSimulator(SimulatorConfig(seed=2, now=NOW, rates=rates, flood_rps=1000, **TINY))
    uid = simulator.ground_truth()["users"][0]["user_id"]
    with simulator.running():
        paced, greedy = simulator.new_cookies(2)
        url = f"{simulator.base_url}/api/container/getIndex?containerid=100505{uid}"

        async def paced_client() -> list[int]:
            statuses = []
            async with _session(paced) as session:
                for _ in range(12):
                    statuses.append((await _get(session, url)).status)
                    await asyncio.sleep(1 / 20)
            return statuses

        assert asyncio.run(paced_client()) == [200] * 12
        burst = fetch([url] * 24, greedy)
        refused = [reply.status for reply in burst if reply.status != 200]
        stats = simulator.stats()
    assert refused and set(refused) == {418}
    assert stats["violations"] == len(refused) == stats["violations_by_cookie"][cookie_hash(greedy)]
    assert cookie_hash(paced) not in stats["violations_by_cookie"]
    assert stats["requests_by_cookie"][cookie_hash(paced)] == 12 and stats["by_class"]["mobile"] == 36
    with pytest.raises(parsers.Blocked, match="rate_limited"):
        parsers.parse_profile(next(r.body for r in burst if r.status == 418), url)


def test_flooding_a_cookie_gets_414() -> None:
    rates = {**unlimited_rates(), "ajax": RateLimit(1.0, 1)}
    simulator = WeiboSimulator(SimulatorConfig(seed=2, now=NOW, rates=rates, flood_rps=5, **TINY))
    bid = simulator.ground_truth()["posts"][0]["bid"]
    with simulator.running():
        replies = fetch([f"{simulator.base_url}/ajax/statuses/show?id={bid}"] * 16, simulator.new_cookies(1)[0])
    statuses = [reply.status for reply in replies]
    assert statuses.count(200) == 1 and 414 in statuses  # burst 1 + 0.1 token of slack (jitter_s x rate)


def test_faults_break_responses_and_a_retry_can_succeed(tiny) -> None:
    cookie = tiny.new_cookies(1)[0]
    truth = tiny.ground_truth()
    topic = tiny.topics()[0]
    search = search_url(tiny, topic.name, topic.timescope)
    profile = f"{tiny.base_url}/api/container/getIndex?containerid=100505{truth['users'][0]['user_id']}"

    tiny.set_faults(1.0, ["malformed_html"])
    reply = fetch([search], cookie)[0]
    with pytest.raises(parsers.ParseError, match="truncated"):
        parsers.parse_search_page(reply.body, reply.url, reply.served_at)
    assert parsers.parse_profile(fetch([profile], cookie)[0].body, profile)  # not an HTML endpoint: untouched
    tiny.set_faults(1.0, ["malformed_json"])
    with pytest.raises(parsers.ParseError, match="not JSON"):
        parsers.parse_profile(fetch([profile], cookie)[0].body, profile)
    for kind, status in (("http_500", 500), ("http_502", 502), ("http_503", 503)):
        tiny.set_faults(1.0, [kind])
        assert [r.status for r in fetch([search, profile], cookie)] == [status, status]
    tiny.set_faults(1.0, ["slow"], delay_s=0.3)
    started = time.monotonic()
    reply = fetch([profile], cookie)[0]
    assert time.monotonic() - started >= 0.3 and parsers.parse_profile(reply.body, profile)
    tiny.set_faults(1.0, ["truncated"])
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        fetch([profile], cookie)
    tiny.set_faults(0.0)
    assert fetch([profile], cookie)[0].status == 200
    stats = tiny.stats()
    assert stats["violations"] == 0 and stats["faults"] >= 8
    assert set(stats["faults_by_kind"]) == {"malformed_html", "malformed_json", "http_500", "http_502", "http_503",
                                            "slow", "truncated"}


def test_faults_are_drawn_per_request(tiny) -> None:
    cookie = tiny.new_cookies(1)[0]
    uid = tiny.ground_truth()["users"][0]["user_id"]
    tiny.set_faults(0.5, ["http_503"])
    statuses = [reply.status for reply in fetch(
        [f"{tiny.base_url}/api/container/getIndex?containerid=100505{uid}"] * 40, cookie)]
    assert 5 < statuses.count(503) < 35 and statuses.count(200) == 40 - statuses.count(503)


def test_stats_endpoint_and_standalone_command(tiny) -> None:
    cookie = tiny.new_cookies(1)[0]
    fetch([f"{tiny.base_url}/ajax/statuses/show?id=nothing"], cookie)
    reply = fetch([f"{tiny.base_url}/_sim/stats"], None)[0]
    assert reply.status == 200 and '"requests": 1' in reply.body and '"ajax": 1' in reply.body
    assert tiny.stats()["requests"] == 1  # the control endpoint is not counted

    command = [sys.executable, "-m", "crawl_actors.simulator", "--port", "0", "--cookies", "2", "--users", "4",
               "--topics", "1"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        try:
            lines = [process.stdout.readline() for _ in range(4)]
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert lines[0].startswith("Weibo simulator at http://127.0.0.1:")
    assert lines[1].startswith("topic #") and "timescope=custom:2025-10-06-0:2025-10-09-0" in lines[1]
    assert all(line.startswith("cookie SUB=sim-") for line in lines[2:])


def test_standalone_command_tells_programs_where_it_is_in_json() -> None:
    """The demo starts the simulator as a process: one JSON line says where it listens, what topics it
    serves (bounds in Beijing time) and which cookies it issued; its limits come from --rates; SIGTERM
    stops it cleanly."""
    command = [sys.executable, "-m", "crawl_actors.simulator", "--port", "0", "--cookies", "2", "--users", "4",
               "--topics", "2", "--history", "1", "3", "--hot-topic-posts", "20", "--topic-posts", "5",
               "--rates", "mobile=1000:10", "--json"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        try:
            info = json.loads(process.stdout.readline())
            statuses = [reply.status for reply in fetch(
                [f"{info['base_url']}/api/container/getIndex?containerid=1005051"] * 5, info["cookies"][0])]
        finally:
            process.terminate()
            code = process.wait(timeout=30)
    assert code == 0
    assert len(info["cookies"]) == 2 and all(cookie.startswith("SUB=sim-") for cookie in info["cookies"])
    assert [set(topic) for topic in info["topics"]] == [{"name", "query", "start", "end", "hot"}] * 2
    assert info["topics"][0]["hot"] and info["topics"][0]["query"] == f"#{info['topics'][0]['name']}#"
    assert datetime.fromisoformat(info["topics"][0]["start"]).utcoffset() == timedelta(hours=8)
    assert statuses == [200] * 5  # five at once: over Weibo's mobile limit (burst 2), within the one given


def test_page_numbered_timelines_round_trip() -> None:
    """The other paging style Weibo serves: cardlistInfo with page and total, no since_id (2019-2021)."""
    sim = WeiboSimulator(SimulatorConfig(seed=3, num_users=6, history_posts=(15, 40), hot_topic_posts=40,
                                         topic_posts=10, rates=unlimited_rates(), timeline_paging="page"))
    with sim.running():
        cookie = sim.new_cookies(1)[0]
        rows = sim.ground_truth()["history"]
        uids = list(dict.fromkeys(row["user_id"] for row in rows))
        assert crawl_timelines(sim, cookie, uids, by_since_id=False) == [
            [row for row in rows if row["user_id"] == uid] for uid in uids]


def test_the_search_window_covers_every_topic_in_whole_beijing_hours() -> None:
    from crawl_actors.tasks import BEIJING

    sim = WeiboSimulator(SimulatorConfig(seed=5, num_users=6, num_topics=4, history_posts=(1, 2), hot_topic_posts=4,
                                         topic_posts=2))
    start, end = sim.search_window()

    def moment(text: str) -> datetime:
        day, hour = text.rsplit("-", 1)
        return datetime.strptime(day, "%Y-%m-%d").replace(hour=int(hour), tzinfo=BEIJING)

    topics = sim.topics()
    assert moment(start) == min(t.start for t in topics) and moment(end) == max(t.end for t in topics)
    assert all(moment(start) <= t.start and t.end <= moment(end) for t in topics)
