"""Cleaning rules, each proven by a case; BM25 retrieval against a plain re-implementation of the
research algorithm (python jieba, re-tokenising the query for every post, as the research did)."""

from __future__ import annotations

from collections import Counter

import jieba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_jobs.cleaning import clean_text, is_hashtags_only, judge_post
from dataset_jobs.retrieval import BM25Retriever, repost_document, tokenize

jieba.setLogLevel(60)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("今天去看了演唱会 小明的微博视频", "今天去看了演唱会"),
        ("直播开始啦 某某某的微博直播 快来", "直播开始啦 快来"),
        ("太棒了，支持！王尼玛的微博视频", "太棒了，支持！"),  # the user's words before the card stay
        ("寄出。明日方舟Arknights的微博视频 抽奖详情", "寄出。 抽奖详情"),
        ("一二三四五六七八九十" + "a" * 30 + "的微博视频", "一二三四五六七八九十"),  # no nickname is longer than 30
        ("详情见 网页链接 ！", "详情见 ！"),
        ("说得对//@小红:转发微博", "说得对 @小红:转发微博"),
        ("#热门视频# 这个视频笑死我了", "这个视频笑死我了"),
        ("  多余   的\n空白\t ", "多余 的 空白"),
    ],
)
def test_noise_patterns_are_removed(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def verdict(text: str, retweet: str | None = None, name: str | None = "小明", exclusions=("抽奖",),
            targets: frozenset[str] = frozenset()) -> str | None:
    return judge_post(text, retweet, "m1", name, exclusions, targets).dropped_by


def test_each_rule_drops_its_case_and_keeps_the_rest() -> None:
    assert verdict("今天天气不错，出去走走") is None
    assert verdict("#北京新政# #上海暴雨#") == "hashtags_only"
    assert verdict("#北京新政#", retweet="这条新闻很重要") is None  # a repost's own text may be just the tag
    assert verdict("网页链接") == "empty"
    assert verdict("转发抽奖送手机") == "excluded_word"
    assert verdict("好物分享", retweet="参与抽奖") == "excluded_word"  # the reposted text counts too
    assert verdict("我是小明，今天很开心") == "own_name"
    assert verdict("我是小明", name=None) is None
    assert verdict("这就是我发的那条", targets=frozenset({"m1"})) == "target_post"


@pytest.mark.parametrize("text", ["#a#", "#a# #b#", "#话题一#  #话题二#"])
def test_hashtags_only(text: str) -> None:
    assert is_hashtags_only(text)
    assert not is_hashtags_only(text + " 有话说")


def research_ranking(
    news: str, posts: list[str], k: int = 5, k1: float = 1.5, b: float = 0.75
) -> list[tuple[int, float]]:
    """The research BM25, written plainly: per post, tokenise the query again and sum over its words."""
    docs = [list(jieba.cut(post)) for post in posts]
    avgdl = np.mean([len(doc) for doc in docs])
    word_freq, doc_freq = Counter(), Counter()
    for doc in docs:
        word_freq.update(doc)
        doc_freq.update(set(doc))
    scored = []
    for index, doc in enumerate(docs):
        score, counts = 0.0, Counter(doc)
        for word in jieba.cut(news):
            if word not in word_freq:
                continue
            idf = np.log((len(docs) - doc_freq[word] + 0.5) / (doc_freq[word] + 0.5) + 1)
            tf = counts[word]
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scored.append((index, score))
    scored.sort(key=lambda item: item[1], reverse=True)
    return scored[:k]


def test_top_k_equals_the_research_bm25_on_every_user(simulator) -> None:
    truth = simulator.ground_truth()
    posts: dict[str, list[str]] = {}
    for row in truth["history"]:
        posts.setdefault(row["user_id"], []).append(repost_document(row["text"], row["retweet_text"]))
    news = [topic["news"] for topic in truth["topics"]]
    compared = 0
    for user_posts in posts.values():
        for query in news[:2]:
            ours = [index for index, _ in BM25Retriever().rank(query, user_posts, 5)]
            assert ours == [index for index, _ in research_ranking(query, user_posts)]
            compared += 1
    assert compared >= 40


word = st.sampled_from(["北京", "新政", "交通", "支持", "下雨", "上海", "哈哈", "手机", "发布会", "价格", "好", "的"])
post = st.lists(word, min_size=1, max_size=12).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(posts=st.lists(post, min_size=1, max_size=25), query=st.lists(word, min_size=1, max_size=10).map("".join))
def test_top_k_matches_the_research_bm25_on_random_posts(posts: list[str], query: str) -> None:
    ours = BM25Retriever().rank(query, posts, 5)
    reference = research_ranking(query, posts)
    assert [index for index, _ in ours] == [index for index, _ in reference]
    assert [score for _, score in ours] == pytest.approx([score for _, score in reference], rel=1e-9, abs=1e-12)


def test_a_repost_is_scored_on_its_comment_and_the_reposted_text() -> None:
    posts = ["今天吃了火锅", repost_document("转发一下", "北京交通新政今天发布"), "周末去爬山"]
    assert BM25Retriever().rank("北京发布交通新政", posts, 1)[0][0] == 1


def test_rjieba_tokenises_like_jieba(simulator) -> None:
    texts = [row["text"] for row in simulator.ground_truth()["history"][:500]]
    assert all(tokenize(text) == list(jieba.cut(text)) for text in texts)


@pytest.mark.parametrize(("usable", "min_posts", "dropped"), [(9, 10, 9), (10, 10, 0), (0, 1, 0)])
def test_a_user_with_too_few_usable_posts_is_dropped_whole(usable: int, min_posts: int, dropped: int) -> None:
    import pyarrow as pa

    from dataset_jobs.steps.clean import enforce_min_posts

    group = pa.table({"mid": [str(i) for i in range(usable + 2)],
                      "dropped_by": [None] * usable + ["empty", "hashtags_only"]})
    verdicts = enforce_min_posts(group, min_posts)["dropped_by"].to_pylist()
    assert verdicts.count("user_too_few_posts") == dropped
    assert verdicts[-2:] == ["empty", "hashtags_only"]  # a post keeps the first rule that dropped it
