"""What crawl tasks ask for: hashtag and plain-keyword searches, and how a search is sliced."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.config import ConfigError
from crawl_actors.config import WeiboEndpoints
from crawl_actors.frontier import Task
from crawl_actors.job import search_queries
from crawl_actors.tasks import BEIJING, BadTask, _split, request_for, seed_tasks

START = datetime(2025, 10, 6, tzinfo=BEIJING)
END = START + timedelta(days=2)


def query_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["q"][0]


def test_keywords_keep_whether_they_were_hashtags() -> None:
    configured = ["#北京交通新政#", "上海暴雨", " #国庆出游 ", "", "##", "#北京交通新政#", "北京交通新政"]
    assert search_queries(configured) == [
        ("北京交通新政", True), ("上海暴雨", False), ("国庆出游", True), ("北京交通新政", False)]


def test_a_hashtag_is_searched_wrapped_and_a_plain_keyword_as_typed() -> None:
    (hashtag,) = seed_tasks("北京交通新政", START, END, ["search"], hashtag=True)
    (keyword,) = seed_tasks("北京交通新政", START, END, ["search"], hashtag=False)
    endpoints = WeiboEndpoints()
    hashtag_url, _ = request_for(hashtag, endpoints, START)
    keyword_url, _ = request_for(keyword, endpoints, START)
    assert "q=%23%E5%8C%97" in hashtag_url and query_of(hashtag_url) == "#北京交通新政#"
    assert query_of(keyword_url) == "北京交通新政"
    assert hashtag.id != keyword.id  # two searches: both are crawled when both are configured


def test_a_task_from_before_the_flag_is_a_hashtag_search() -> None:
    (task,) = seed_tasks("北京交通新政", START, END, ["search"])
    del task.params["hashtag"]
    assert query_of(request_for(task, WeiboEndpoints(), START)[0]) == "#北京交通新政#"


def test_slices_of_a_keyword_search_stay_keyword_searches() -> None:
    (keyword,) = seed_tasks("上海暴雨", START, END, ["search"], hashtag=False)
    days = _split(keyword.params)
    hours = _split(days[0].params)
    provinces = _split(hours[0].params)
    cities = _split(provinces[0].params)
    assert [len(days), len(hours)] == [2, 24] and provinces and cities
    for task in (*days, *hours, provinces[0], cities[0]):
        assert query_of(request_for(task, WeiboEndpoints(), START)[0]) == "上海暴雨"
    (hashtag,) = seed_tasks("上海暴雨", START, END, ["search"], hashtag=True)
    assert {t.id for t in _split(hashtag.params)}.isdisjoint(t.id for t in days)


def test_a_day_end_is_inclusive_and_an_hour_end_is_where_that_hour_begins() -> None:
    from crawl_actors.job import search_range

    assert search_range("2025-10-06", "2025-10-08") == (START, START + timedelta(days=3))  # the 8th included
    assert search_range("2025-10-06", "2025-10-06") == (START, START + timedelta(days=1))  # one whole day
    assert search_range("2025-10-06-0", "2025-10-08-20") == (START, START + timedelta(days=2, hours=20))
    assert search_range("2025-10-06-5", "2025-10-06-6") == (START + timedelta(hours=5), START + timedelta(hours=6))
    (task,) = seed_tasks("北京交通新政", *search_range("2025-10-06", "2025-10-08"), ["search"])
    timescope = parse_qs(urlsplit(request_for(task, WeiboEndpoints(), START)[0]).query)["timescope"][0]
    assert timescope == "custom:2025-10-06-0:2025-10-09-0"  # Weibo's end is exclusive: the day after
    for start, end in (("2025-10-06-5", "2025-10-06-5"), ("2025-10-07", "2025-10-06"), ("2025-10-06", "2025-10-05-23")):
        with pytest.raises(ConfigError, match="not after start"):
            search_range(start, end)
    with pytest.raises(ConfigError, match="not a date"):
        search_range("2025-13-01", "2025-13-02")


@given(st.sampled_from(["profile", "details", "timeline", "long_text", "region"]), st.text(max_size=30),
       st.one_of(st.none(), st.text(max_size=30), st.integers(-5, 20_000)))
def test_ids_from_responses_never_leave_the_endpoint(kind: str, value: str, extra) -> None:
    """Whatever a response put into an id, a request goes to the endpoint's host and path, or not at all."""
    name = {"profile": "uid", "details": "uid", "timeline": "uid", "long_text": "mid", "region": "bid"}[kind]
    params = {name: value, "page": 1, "uid": "1"} if name != "uid" else {"uid": value, "page": 1}
    if kind == "timeline":
        params["since_id" if isinstance(extra, str) else "page_number"] = extra
    endpoints = WeiboEndpoints(mobile="https://m.weibo.cn", ajax="https://weibo.com")
    try:
        url, _ = request_for(Task(kind, "k", params), endpoints, START)
    except BadTask:
        return
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) in {("https", "m.weibo.cn"), ("https", "weibo.com")}
    assert parts.path in {"/api/container/getIndex", "/statuses/extend", "/ajax/statuses/show"} or (
        parts.path.startswith("/detail/") and parts.path[8:].isdigit())
    assert not parts.fragment and all(key in {"containerid", "id", "page", "since_id"} for key in parse_qs(parts.query))
    assert all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in value)


def test_the_region_table_is_weibos_whole_table() -> None:
    import json
    from importlib import resources

    from crawl_actors import regions
    from crawl_actors.simulator import SimulatorConfig
    from crawl_actors.simulator.corpus import build_corpus

    table = json.loads(resources.files("crawl_actors").joinpath("data", regions.DATA_FILE).read_text("utf-8"))
    codes = [item["code"] for item in table["provinces"]]
    assert len(codes) == len(set(codes)) == 36 and {11, 44, 81, 82, 71, 100, 400} <= set(codes)
    assert len({item["name"] for item in table["provinces"]}) == 36
    for item in table["provinces"]:
        cities = item["cities"]
        assert cities, item["name"]  # its cities, or at least the whole-province code
        assert list(cities) == [str(regions.WHOLE_PROVINCE)] or str(regions.WHOLE_PROVINCE) not in cities
        assert len(set(cities.values())) == len(cities), f"{item['name']}: a city name twice"
    assert sum(len(regions.city_codes(code)) for code in regions.province_codes()) == 456
    assert regions.city_codes(100) == () and regions.city_name(11, 28) == "密云县"
    assert regions.province_name(400) == "海外"
    assert "MIT" in regions.source() and "region.py" in regions.source()
    (search,) = seed_tasks("x", START, END, ["search"])
    provinces = _split(_split(_split(search.params)[0].params)[0].params)
    assert [task.params["province"] for task in provinces] == list(regions.province_codes())
    assert [task.params["city"] for task in _split(provinces[0].params)] == list(regions.city_codes(11))
    assert _split(next(t for t in provinces if t.params["province"] == 100).params) == []  # 其他: whole only
    corpus = build_corpus(SimulatorConfig(seed=1, num_users=200, history_posts=(1, 3), hot_topic_posts=20,
                                          topic_posts=5))
    drawn = {(post.province, post.city) for post in corpus.posts.values()}
    assert all(city in regions.city_codes(province) for province, city in drawn)
    assert len({province for province, _ in drawn}) > 25  # drawn from the whole table, not a sample
