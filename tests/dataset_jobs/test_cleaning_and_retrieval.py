"""Cleaning rules, each proven by a case, ours and the research's; properties: a text without a listed
pattern comes out as it went in; BM25 retrieval against a plain re-implementation of the research
algorithm (python jieba, re-tokenising the query for every post, as the research did)."""

from __future__ import annotations

from collections import Counter
from importlib import resources

import jieba
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dataset_jobs.cleaning import (
    FIXED_NOISE,
    Exclusions,
    Rules,
    clean_text,
    exclusions_for,
    is_hashtags_only,
    judge_post,
    post_topics,
    research_exclusions,
)
from dataset_jobs.retrieval import BM25Retriever, repost_document, tokenize

jieba.setLogLevel(60)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("今天看了直播太开心了小明的微博直播", "今天看了直播太开心了小明的微博直播"),  # the user's own words stay
        ("今天去看了演唱会\n小明的微博视频", "今天去看了演唱会 小明的微博视频"),  # a card is the parser's to remove
        ("#话题# 今天看了小明的微博视频", "#话题# 今天看了小明的微博视频"),
        ("好看吗\n全文", "好看吗 全文"),  # only the literal cut-off marker goes
        ("好看吗...\n全文", "好看吗"),
        ("好看吗…\n全文", "好看吗"),
        ("详情见 网页链接 ！", "详情见 ！"),
        ("说得对//@小红:转发微博", "说得对@小红:转发微博"),
        ("#热门视频# 这个视频笑死我了", "这个视频笑死我了"),
        ("微博正文看这里", "看这里"),
        ("  多余   的\n空白\t ", "多余 的 空白"),
    ],
)
def test_our_noise_patterns_remove_only_fixed_strings(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("今天去看了演唱会\n小明的微博视频", "今天去看了演唱会"),  # a card after a line break
        ("直播开始啦\n某某某的微博直播 快来", "直播开始啦 快来"),
        ("今天看了直播太开心了小明的微博直播", "今天看了直播太开心了小明的微博直播"),  # no line break: kept
        # everything from a '#' to a card becomes '#': the research's own example, and its cost
        ("看电竞～（cr水印）#张艺谋现身王者共创之夜#苏酿酿呀的微博视频", "看电竞～（cr水印）#张艺谋现身王者共创之夜#"),
        ("#话题# 今天看了小明的微博视频", "#话题#"),
        ("好看吗\n全文", ""),  # `...` is a regex there: any three characters before the line break go
        ("看完了...\n全文", "看完了"),
        ("详情见 网页链接 ！", "详情见 ！"),
        ("说得对//@小红:转发微博", "说得对@小红:转发微博"),
        ("#热门视频# 这个视频笑死我了", "这个视频笑死我了"),
    ],
)
def test_research_noise_patterns_are_the_research_pipelines(raw: str, clean: str) -> None:
    assert clean_text(raw, "research") == clean


FRAGMENTS = ["小明", "今天", "看了", "直播", "开心", "的", "微博", "视频", "正文", "网页", "链接", "热门", "全文",
             "#", "@", "/", ".", "…", "【", " ", "\n", "\t", "a", "1", "的微博视频", "的微博直播"]


def unchanged_apart_from_whitespace(raw: str, clean: str) -> bool:
    return clean.split() == raw.split()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_ours_leaves_a_text_without_a_listed_pattern_as_it_is(raw: str) -> None:
    assume(not any(noise in raw for noise in (*FIXED_NOISE, "...\n全文", "…\n全文")))
    assert unchanged_apart_from_whitespace(raw, clean_text(raw))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_research_leaves_a_text_without_a_card_or_a_listed_pattern_as_it_is(raw: str) -> None:
    assume(not any(noise in raw for noise in (*FIXED_NOISE, "的微博视频", "的微博直播", "\n全文")))
    assert unchanged_apart_from_whitespace(raw, clean_text(raw, "research"))


def verdict(text: str, retweet: str | None = None, name: str | None = "小明", topics: list[str] | None = None,
            targets: frozenset[str] = frozenset(), **rules) -> str | None:
    options = {"exclusions": Exclusions(texts=("抽奖",)), **rules}
    return judge_post(text, retweet, "m1", name, Rules(**options), targets, topics).dropped_by


def test_each_of_our_rules_drops_its_case_and_keeps_the_rest() -> None:
    assert verdict("今天天气不错，出去走走") is None
    assert verdict("#北京新政# #上海暴雨#") == "hashtags_only"
    assert verdict("#北京新政#", retweet="这条新闻很重要") is None  # a repost's own text may be just the tag
    assert verdict("", retweet="这条新闻很重要") is None  # and a repost need not add words
    assert verdict("网页链接") == "empty"
    assert verdict("转发抽奖送手机") == "excluded_word"
    assert verdict("好物分享", retweet="参与抽奖") == "excluded_word"  # the reposted text counts too
    assert verdict("我是小明，今天很开心") == "own_name"
    assert verdict("我是小明", name=None) is None
    assert verdict("这就是我发的那条", targets=frozenset({"m1"})) == "target_post"
    assert verdict("没有话题的一条微博", topics=[]) is None
    assert verdict("#晚安# 睡了", topics=["晚安"]) is None


def test_each_research_rule_drops_its_case() -> None:
    research = {"exclusions": research_exclusions(), "require_own_text": True, "require_topics": True,
                "short_topic_chars": 3, "exclude_all_targets": False, "patterns": "research"}
    tags = ["周末计划安排"]
    assert verdict("#周末计划安排# 出去走走", topics=tags, **research) is None
    assert verdict("#周末计划安排# 出去走走", topics=tags, targets=frozenset({"m1"}), **research) is None
    assert verdict("#周末计划安排# 好", retweet="#生日快乐# 今天", topics=tags, **research) == "excluded_retweet_topic"
    assert verdict("#周末计划安排# 好", retweet="参与抽奖", topics=tags, **research) == "excluded_retweet_text"
    assert verdict("#海边旅游攻略# 出发", topics=["海边旅游攻略"], **research) == "excluded_topic"
    assert verdict("#周末计划安排# @小红 一起吗", topics=tags, **research) == "excluded_word"
    assert verdict("#周末计划安排# 小明出门了", topics=tags, **research) == "own_name"
    assert verdict("#周末计划安排# 好", retweet="小明真棒", topics=tags, **research) is None  # own text only
    assert verdict("#求助# 电脑坏了", topics=["求助"], **research) == "short_topic"
    assert verdict("#周末计划安排#", retweet="去爬山", topics=tags, **research) == "hashtags_only"
    assert verdict("", retweet="去爬山", topics=[], **research) == "no_own_text"
    assert verdict("出去走走", topics=[], **research) == "no_topic"
    assert verdict("", topics=[], **research) == "empty"


def test_research_topics_are_read_as_the_research_reads_them() -> None:
    assert post_topics(["热门视频", "北京新政"]) == ["热门视频", "北京新政"]  # only ',热门视频' is taken out
    assert post_topics(["北京新政", "热门视频"]) == ["北京新政"]
    assert post_topics(["北京新政", "热门视频集锦"]) == ["北京新政集锦"]  # a string replace, as the research's
    assert post_topics([" ", ""]) == []


def test_the_research_lists_ship_with_their_source_and_licence() -> None:
    lists = research_exclusions()
    assert (len(lists.topics), len(lists.texts), len(lists.retweet_topics), len(lists.retweet_texts)) == (
        107, 244, 13, 51)
    assert "@" in lists.texts and "【" in lists.texts and not lists.text_covers_repost
    header = resources.files("dataset_jobs").joinpath("research_exclusions.yaml").read_text(encoding="utf-8")
    assert "github.com/Znull-1220/SocialAlign" in header and "MIT License" in header
    assert "Copyright (c) 2025 SocialAlign authors" in header
    assert exclusions_for("research", ["只有这个"]).texts == ("只有这个",)  # the config's words replace the texts
    assert exclusions_for("research", ["只有这个"]).topics == lists.topics


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


def test_bm25_on_a_news_item_finds_its_readers_posts_on_the_news_category(simulator) -> None:
    """The simulator's users argue about their categories' themes, so a news item shares words with
    what its readers wrote on its category: most of the top 5 are on it (of as many as the user wrote).
    Those posts carry the user's stance on the category; the others carry another stance or none."""
    corpus = simulator.corpus
    own: dict[str, list] = {uid: [] for uid in corpus.users}
    for post in corpus.posts.values():
        if post.topic is None and post.retweet_of is None:
            own[post.uid].append(post)
    found = possible = 0
    for posts in own.values():
        index = BM25Retriever().index([p.text for p in posts])  # each user's posts tokenised once
        for topic in corpus.topics:
            on_category = sum(p.category == topic.category for p in posts)
            if on_category:
                ranked = index.top_k(index.scores_for(topic.news), 5)
                found += sum(posts[i].category == topic.category for i, _ in ranked)
                possible += min(5, on_category)
    assert possible >= 60
    assert found / possible >= 0.7


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
