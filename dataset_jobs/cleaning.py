"""Cleaning users' history: noise out of the text, then rules that drop whole posts.

Every rule is a named predicate; a dropped post keeps the name of the first rule (in RULES order)
that dropped it, so the job can report how many rows each rule removed. Pure functions over plain
rows: the job runs them inside Ray Data batches.

Two sets of text patterns:
- ours: only fixed strings Weibo adds (网页链接, 微博正文, the repost chain's `//`, #热门视频#, the
  `...` + line break + 全文 of a cut-off post). None of them can eat the user's own words: a text
  without them comes out as it went in, apart from whitespace. Video and live-stream cards
  ("<nickname>的微博视频") are markup in the page, and the crawl's parser removes them there, where
  their structure is known; in plain text nothing tells where a nickname begins.
- research: the research pipeline's patterns as it applies them (utils/clean_text.py): a card
  after a line break (`\\n\\S+的微博视频`), everything from a `#` to a card (`#[^#]+的微博视频` becomes
  `#`), any three characters before a line break and 全文 (its `...` is a regex), then the fixed strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from cluster.text import hashtags

Patterns = Literal["ours", "research"]

# Fixed strings, removed in this order (replaced by nothing, as the research does).
FIXED_NOISE = ("网页链接", "微博正文", "//", "#热门视频#")
_CUT_OFF = re.compile(r"(?:\.\.\.|…)\n全文")  # ours: the literal marker only

_RESEARCH_REMOVED = (re.compile(r"\n\S+的微博视频"), re.compile(r"\n\S+的微博直播"), re.compile(r"...\n全文"))
_RESEARCH_TO_HASH = (re.compile(r"#[^#]+的微博直播"), re.compile(r"#[^#]+的微博视频"))

_HASHTAGS_ONLY = re.compile(r"(?:#[^#]+#\s*)+")
_WHITESPACE = re.compile(r"\s+")

# Ads, lotteries, fan-club chatter: our default list, over the post's text and the reposted text.
DEFAULT_EXCLUSIONS = (
    "抽奖", "转发抽奖", "福袋", "锦鲤", "接好运", "红包", "优惠券", "领券", "上链接", "下单", "秒杀",
    "超话", "打卡", "签到", "应援", "打榜", "投票", "控评", "反黑", "粉丝", "代言", "品牌大使", "生日快乐",
)

# In the order they are applied; the user-level rule comes after all post-level ones.
RULES = (
    "target_post",
    "excluded_retweet_topic",
    "excluded_retweet_text",
    "excluded_topic",
    "excluded_word",
    "own_name",
    "short_topic",
    "hashtags_only",
    "empty",
    "no_own_text",
    "no_topic",
    "user_too_few_posts",
)


@dataclass(frozen=True)
class Exclusions:
    """Words whose presence drops a post: in its text, its topics, the reposted text, the reposted
    post's topics. `text_covers_repost`: the text words are looked for in the reposted text too
    (ours), the user's name as well; the research looks for them in the post's own text only."""

    texts: tuple[str, ...] = DEFAULT_EXCLUSIONS
    topics: tuple[str, ...] = ()
    retweet_texts: tuple[str, ...] = ()
    retweet_topics: tuple[str, ...] = ()
    text_covers_repost: bool = True


@cache
def research_exclusions() -> Exclusions:
    """The research pipeline's four lists (dataset_jobs/research_exclusions.yaml, MIT, source inside)."""
    text = resources.files("dataset_jobs").joinpath("research_exclusions.yaml").read_text(encoding="utf-8")
    lists = yaml.safe_load(text)
    return Exclusions(tuple(lists["texts"]), tuple(lists["topics"]), tuple(lists["retweet_texts"]),
                      tuple(lists["retweet_topics"]), text_covers_repost=False)


def exclusions_for(kind: Patterns, words: Sequence[str] | None) -> Exclusions:
    """The built-in lists of `kind`; `words`, when given, replace its text list."""
    base = research_exclusions() if kind == "research" else Exclusions()
    return base if words is None else Exclusions(tuple(words), base.topics, base.retweet_texts, base.retweet_topics,
                                                 base.text_covers_repost)


@dataclass(frozen=True)
class Rules:
    """Everything that decides whether a history post stays (built from the config by the clean step)."""

    patterns: Patterns = "ours"
    exclusions: Exclusions = field(default_factory=Exclusions)
    exclude_own_name: bool = True
    require_own_text: bool = False  # a repost must add words of its own
    require_topics: bool = False  # a post must carry at least one hashtag topic
    short_topic_chars: int = 0  # a topic of at most this many characters drops the post (0: none)
    exclude_all_targets: bool = True  # every target post of the user leaves the history (else each case's own)


@dataclass(frozen=True)
class Verdict:
    text: str
    retweet_text: str | None
    dropped_by: str | None  # the first rule that dropped the post, None if it is kept


def clean_text(text: str | None, patterns: Patterns = "ours") -> str:
    """The text without noise, whitespace runs collapsed to one space, ends stripped."""
    text = text or ""
    if patterns == "research":
        for pattern in _RESEARCH_REMOVED:
            text = pattern.sub("", text)
        for pattern in _RESEARCH_TO_HASH:
            text = pattern.sub("#", text)
    else:
        text = _CUT_OFF.sub("", text)
    for noise in FIXED_NOISE:
        text = text.replace(noise, "")
    return _WHITESPACE.sub(" ", text.strip())


def is_hashtags_only(text: str) -> bool:
    return bool(_HASHTAGS_ONLY.fullmatch(text))


def post_topics(topics: Iterable[str] | None) -> list[str]:
    """A post's topics as the research reads them: joined by commas, ',热门视频' taken out of the
    joined string (so a leading 热门视频 stays), split again; blanks dropped."""
    joined = ",".join(topics or ()).replace(",热门视频", "")
    return [topic.strip() for topic in joined.split(",") if topic.strip()]


def judge_post(
    text: str | None,
    retweet_text: str | None,
    mid: str,
    user_name: str | None,
    rules: Rules,
    target_mids: frozenset[str] = frozenset(),
    topics: Sequence[str] | None = None,
) -> Verdict:
    """Clean a history post and decide whether it stays; rules in RULES order."""
    cleaned = clean_text(text, rules.patterns)
    cleaned_retweet = clean_text(retweet_text, rules.patterns) if retweet_text is not None else None
    return Verdict(cleaned, cleaned_retweet, _first_rule(cleaned, cleaned_retweet, retweet_text, mid, user_name,
                                                         rules, target_mids, topics))


def _first_rule(
    text: str, retweet: str | None, raw_retweet: str | None, mid: str, user_name: str | None, rules: Rules,
    target_mids: frozenset[str], topics: Sequence[str] | None,
) -> str | None:
    ex = rules.exclusions
    own_topics = post_topics(topics)
    joined_topics = ",".join(own_topics)
    searched = f"{text} {retweet or ''}" if ex.text_covers_repost else text
    # A reposted post's topics come from its text: the crawl keeps no topic list for it.
    checks = (
        ("target_post", rules.exclude_all_targets and mid in target_mids),
        ("excluded_retweet_topic", retweet is not None and _any_in(ex.retweet_topics, ",".join(hashtags(raw_retweet)))),
        ("excluded_retweet_text", retweet is not None and _any_in(ex.retweet_texts, retweet)),
        ("excluded_topic", _any_in(ex.topics, joined_topics)),
        ("excluded_word", _any_in(ex.texts, searched)),
        ("own_name", rules.exclude_own_name and bool(user_name) and user_name in searched),
        ("short_topic", rules.short_topic_chars > 0 and any(len(t) <= rules.short_topic_chars for t in own_topics)),
        ("hashtags_only", (not retweet or rules.require_own_text) and is_hashtags_only(text)),
        ("empty", not text and not retweet),
        ("no_own_text", rules.require_own_text and not text),
        ("no_topic", rules.require_topics and not own_topics),
    )
    return next((name for name, dropped in checks if dropped), None)


def _any_in(words: Iterable[str], text: str) -> bool:
    return any(word and word in text for word in words)
