"""`build-dataset preset=research`: one test per field the preset sets (each row of docs/presets.md),
showing what that field alone changes against our default; and a check that no row goes untested."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from cluster.config import load_config
from cluster.llm import LLMEndpointConfig
from cluster.retry import Backoff
from cluster.schemas import CLEAN_HISTORY
from dataset_jobs.cleaning import judge_post
from dataset_jobs.config import DatasetConfig
from dataset_jobs.persona import PersonaClient, persona_prompt, shown_post, system_prompt
from dataset_jobs.retrieval import BM25Retriever
from dataset_jobs.steps.clean import _cases, rules_of
from dataset_jobs.steps.persona import case_inputs, persona_input
from dataset_jobs.steps.retrieve import retrieve_user
from dataset_jobs.steps.sft import persona_key, sft_batch
from tests.fakes.openai_server import FakeLLM, FakeLLMConfig, Scripted

RESEARCH = DatasetConfig.PRESETS["research"]
DAY = datetime(2024, 10, 1, 8, tzinfo=timezone.utc)


def research_only(field: str) -> DatasetConfig:
    """Our defaults with just `field` set as the research preset sets it."""
    return DatasetConfig(**{field: RESEARCH[field].value})


def judged(config: DatasetConfig, text: str, retweet: str | None = None, topics: list[str] | None = None,
           targets: frozenset[str] = frozenset()):
    return judge_post(text, retweet, "m1", "小明", rules_of(config), targets, topics)


def test_every_row_of_the_research_preset_has_its_test() -> None:
    module = sys.modules[__name__]
    missing = [field for field in RESEARCH if not hasattr(module, f"test_preset_{field}")]
    assert not missing, f"no test shows the effect of {missing}"


def test_preset_research_sets_every_row_and_what_you_set_wins() -> None:
    config = load_config(DatasetConfig, overrides=["preset=research", "exclude_targets=all"], environ={})
    assert all(getattr(config, field) == setting.value for field, setting in RESEARCH.items()
               if field != "exclude_targets")
    assert config.exclude_targets == "all"


def test_preset_text_patterns() -> None:
    text = "#周末计划安排# 去看了演唱会\n王小二的微博视频"
    assert judged(DatasetConfig(), text).text == "#周末计划安排# 去看了演唱会 王小二的微博视频"
    assert judged(research_only("text_patterns"), text).text == "#周末计划安排# 去看了演唱会"


def test_preset_exclusions() -> None:
    ours, research = DatasetConfig(), research_only("exclusions")
    at = "#周末计划安排# @小红 一起去爬山吗"
    assert judged(ours, at).dropped_by is None and judged(research, at).dropped_by == "excluded_word"
    travel = "#海边旅游攻略# 准备出发"
    assert judged(ours, travel, topics=["海边旅游攻略"]).dropped_by is None
    assert judged(research, travel, topics=["海边旅游攻略"]).dropped_by == "excluded_topic"
    fans = "好消息"
    assert judged(ours, fans, retweet="新歌来了 粉丝快听").dropped_by == "excluded_word"  # ours reads reposts too
    assert judged(research, fans, retweet="新歌来了 粉丝快听").dropped_by == "excluded_retweet_text"
    assert judged(research, "说得好", retweet="#生日快乐# 谢谢").dropped_by == "excluded_retweet_topic"
    assert judged(ours, "说得好", retweet="小明真厉害").dropped_by == "own_name"  # ours: the name in the repost
    assert judged(research, "说得好", retweet="小明真厉害").dropped_by is None  # research: own text only


def test_preset_require_own_text() -> None:
    assert judged(DatasetConfig(), "", retweet="城市跑步的人越来越多了").dropped_by is None
    assert judged(research_only("require_own_text"), "", retweet="城市跑步的人越来越多了").dropped_by == "no_own_text"
    assert judged(DatasetConfig(), "#全民健身#", retweet="跑步").dropped_by is None
    assert judged(research_only("require_own_text"), "#全民健身#", retweet="跑步").dropped_by == "hashtags_only"


def test_preset_require_topics() -> None:
    assert judged(DatasetConfig(), "今天的晚霞很好看", topics=[]).dropped_by is None
    assert judged(research_only("require_topics"), "今天的晚霞很好看", topics=[]).dropped_by == "no_topic"
    assert judged(research_only("require_topics"), "#晚霞# 很好看", topics=["晚霞"]).dropped_by is None


def test_preset_short_topic_chars() -> None:
    text, topics = "#求助# 电脑开不了机了", ["求助"]
    assert judged(DatasetConfig(), text, topics=topics).dropped_by is None
    assert judged(research_only("short_topic_chars"), text, topics=topics).dropped_by == "short_topic"
    assert judged(research_only("short_topic_chars"), "#电脑求助# 开不了机", topics=["电脑求助"]).dropped_by is None


def history(rows: list[tuple[str, str, int]], user: str = "u1") -> pa.Table:
    """(mid, text, day) rows of one user's cleaned history."""
    return pa.Table.from_pylist([{"user_id": user, "mid": mid, "text": text, "retweet_text": None,
                                  "created_at": DAY + timedelta(days=day)} for mid, text, day in rows],
                                schema=CLEAN_HISTORY)


def case(mid: str, news: str, day: int, topic: str = "山姆超市翻车") -> dict:
    return {"topic": topic, "user_id": "u1", "mid": mid, "news": news, "created_at": DAY + timedelta(days=day)}


def picked(table: pa.Table) -> list[list[str]]:
    return table["history_mids"].to_pylist()


def test_preset_exclude_targets() -> None:
    # clean: ours drops every target post of the user; the research keeps them as history
    targets = frozenset({"m1"})
    assert judged(DatasetConfig(), "#山姆超市翻车# 又翻车了", targets=targets).dropped_by == "target_post"
    assert judged(research_only("exclude_targets"), "#山姆超市翻车# 又翻车了", targets=targets).dropped_by is None
    # cases: with each case's own post in the history, that post does not count towards min_history_posts
    posts = pa.table({"query": ["山姆超市翻车"], "user_id": ["u1"], "mid": ["t1"], "text": ["又翻车了"],
                      "created_at": [DAY]})
    _, report = _cases(research_only("exclude_targets"), _empty_crawl(), posts, {"u1": "小明"},
                       {"u1": (10, {"t1"})})
    assert report["cases"] == 0 and report["cases_dropped_too_few_posts"] == 1
    _, report = _cases(research_only("exclude_targets"), _empty_crawl(), posts, {"u1": "小明"},
                       {"u1": (11, {"t1"})})
    assert report["cases"] == 1
    # retrieve: the case's own post is never retrieved, and BM25 scores the history without it
    table = history([("h1", "山姆超市的牛奶", 1), ("h2", "山姆的烤鸡", 2), ("t1", "山姆超市又翻车了", 3),
                     ("t2", "马拉松报名", 4)])
    got = retrieve_user(table, {"u1": [case("t1", "山姆超市翻车", 5)]}, 5, 1.5, 0.75, before_post=True)
    assert picked(got) == [["h1", "h2", "t2"]]
    without = BM25Retriever().rank("山姆超市翻车", ["马拉松报名", "山姆的烤鸡", "山姆超市的牛奶"], 3)
    assert got["scores"].to_pylist()[0] == pytest.approx([score for _, score in without])


def _empty_crawl():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())  # no topics table: every case's news is its hashtag


def test_preset_history_before_post() -> None:
    table = history([(f"h{i}", f"第{i}条 山姆超市" if i in (1, 8) else f"第{i}条 日常", i) for i in range(1, 10)])
    cases = {"u1": [case("t1", "山姆超市", 5)]}
    ours = retrieve_user(table, cases, 5, 1.5, 0.75, before_post=True)
    research = retrieve_user(table, cases, 5, 1.5, 0.75, before_post=RESEARCH["history_before_post"].value)
    assert picked(ours) == [["h1", "h4", "h3", "h2"]]  # only 4 posts before the target: the prompt says 四条
    assert picked(research) == [["h8", "h1", "h9", "h7", "h6"]]  # a later post about the same news comes first


def test_preset_persona_per() -> None:
    table = history([(f"h{i}", f"第{i}条", i) for i in range(1, 9)])
    names = {"u1": "小明"}
    per_user = persona_input(table, names, 5, "ours").to_pylist()
    assert [row["posts"] for row in per_user] == [["第8条", "第7条", "第6条", "第5条", "第4条"]]  # most recent
    retrieved = {"u1": [{"topic": "甲", "user_id": "u1", "mid": "t1", "history_mids": ["h2", "h5"]},
                        {"topic": "乙", "user_id": "u1", "mid": "t2", "history_mids": ["h7", "h1"]}]}
    per_case = case_inputs(table, names, retrieved, "ours").to_pylist()
    assert [(row["topic"], row["mid"], row["posts"]) for row in per_case] == [
        ("甲", "t1", ["第2条", "第5条"]), ("乙", "t2", ["第7条", "第1条"])]
    # the SFT row takes its case's persona, not its user's
    personas = {("甲", "t1"): "甲的画像", ("乙", "t2"): "乙的画像", "u1": "用户的画像"}
    case_row = {"topic": "乙", "user_id": "u1", "mid": "t2", "user_name": "小明", "news": "新闻",
                "news_source": "config", "output": "答"}
    batch = pa.table({"topic": ["乙"], "mid": ["t2"], "history_mids": [["h7"]], "history_texts": [["第7条"]]})
    rows = sft_batch(batch, {("乙", "t2"): case_row}, personas, {"乙": "train"}, ("full",), per="case").to_pylist()
    assert rows[0]["persona"] == "乙的画像" == personas[persona_key(case_row, "case")]
    rows = sft_batch(batch, {("乙", "t2"): case_row}, personas, {"乙": "train"}, ("full",), per="user").to_pylist()
    assert rows[0]["persona"] == "用户的画像"


def test_preset_persona_request() -> None:
    posts = [shown_post("#全民健身运动# 说得太对了", "城市跑步的人越来越多了", "research"),
             shown_post("早上跑了五公里", None, "research")]
    assert posts[0] == "该用户转发了微博: 城市跑步的人越来越多了, 并评论说: #全民健身运动# 说得太对了"
    assert shown_post("#全民健身运动# 说得太对了", "城市跑步的人越来越多了") == (
        "你转发了微博: 城市跑步的人越来越多了, 并评论说: #全民健身运动# 说得太对了")
    analyst = "你是一个微博平台的用户分析师，负责从用户信息和历史博文中抽取用户特征，生成用户画像。"
    assert system_prompt("research") == f"\n{analyst}\n" and system_prompt() == analyst
    request = persona_prompt("小明", posts, "research")
    assert request.endswith("用户信息：\n用户名：小明\n\n历史博文：\n"
                            "1. 该用户转发了微博: 城市跑步的人越来越多了, 并评论说: #全民健身运动# 说得太对了\n"
                            "2. 早上跑了五公里")
    assert persona_prompt("小明", [" 末尾有空格 "], "research").endswith("1.  末尾有空格")  # stripped


def test_preset_persona_answer() -> None:
    answer = "**用户画像**\n\n1. 兴趣话题：超市购物、食品安全、城市跑步与马拉松赛事报名\n\n\n2. 语言风格：口语化"
    forms = {}
    with FakeLLM(FakeLLMConfig(script=[Scripted(content=answer), Scripted(content=answer)])).running() as llm:
        endpoint = LLMEndpointConfig(base_url=llm.base_url, model="fake-persona-1", max_retries=0)
        for form in ("trimmed", RESEARCH["persona_answer"].value):
            client = PersonaClient(endpoint, backoff=Backoff(attempts=1), answer=form)

            async def ask(client: PersonaClient = client) -> str:
                try:
                    return (await client.persona("u1", "小明", ["第一条"])).persona
                finally:
                    await client.close()

            forms[form] = asyncio.run(ask())
    assert forms["trimmed"] == "用户画像\n1. 兴趣话题：超市购物、食品安全、城市跑步与马拉松赛…\n2. 语言风格：口语化"
    assert forms["raw"] == ("**用户画像**\n1. 兴趣话题：超市购物、食品安全、城市跑步与马拉松赛事报名\n"
                            "2. 语言风格：口语化")
