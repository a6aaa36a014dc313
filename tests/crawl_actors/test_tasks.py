"""What crawl tasks ask for: hashtag and plain-keyword searches, and how a search is sliced."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from crawl_actors.config import WeiboEndpoints
from crawl_actors.job import search_queries
from crawl_actors.tasks import BEIJING, _split, request_for, seed_tasks

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
