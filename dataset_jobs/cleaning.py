"""Cleaning users' history: noise patterns out of the text, then rules that drop whole posts.

Every rule is a named predicate; a dropped post keeps the name of the first rule that dropped it,
so the job can report how many rows each rule removed. Pure functions over plain rows: the job
runs them inside Ray Data batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Text Weibo adds that says nothing about the user: video/live-stream cards, link placeholders,
# the repost chain separator, a promoted hashtag. A card reads "<nickname>的微博视频"; a nickname is
# at most 30 letters, digits, "_" or "-", so the name stops at punctuation or after 30 characters
# instead of swallowing the user's own words before the card.
NOISE_PATTERNS = (
    re.compile(r"[\w\-]{0,30}的微博(?:视频|直播)"),
    re.compile(r"网页链接"),
    re.compile(r"微博正文"),
    re.compile(r"//"),
    re.compile(r"#热门视频#"),
)
_HASHTAGS_ONLY = re.compile(r"(?:#[^#]+#\s*)+")
_WHITESPACE = re.compile(r"\s+")

# Ads, lotteries, fan-club chatter: a sensible default; the config can replace it.
DEFAULT_EXCLUSIONS = (
    "抽奖", "转发抽奖", "福袋", "锦鲤", "接好运", "红包", "优惠券", "领券", "上链接", "下单", "秒杀",
    "超话", "打卡", "签到", "应援", "打榜", "投票", "控评", "反黑", "粉丝", "代言", "品牌大使", "生日快乐",
)

# In the order they are applied; the user-level rule comes after all post-level ones.
RULES = ("target_post", "empty", "hashtags_only", "excluded_word", "own_name", "user_too_few_posts")


@dataclass(frozen=True)
class Verdict:
    text: str
    retweet_text: str | None
    dropped_by: str | None  # the first rule that dropped the post, None if it is kept


def clean_text(text: str | None) -> str:
    """Remove the noise patterns, collapse whitespace."""
    text = text or ""
    for pattern in NOISE_PATTERNS:
        text = pattern.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


def is_hashtags_only(text: str) -> bool:
    return bool(_HASHTAGS_ONLY.fullmatch(text))


def judge_post(
    text: str | None,
    retweet_text: str | None,
    mid: str,
    user_name: str | None,
    exclusions: Iterable[str],
    target_mids: frozenset[str],
) -> Verdict:
    """Clean a history post and decide whether it stays; rules in RULES order."""
    cleaned = clean_text(text)
    cleaned_retweet = clean_text(retweet_text) if retweet_text else None
    both = f"{cleaned} {cleaned_retweet or ''}"
    if mid in target_mids:
        rule = "target_post"
    elif not cleaned and not cleaned_retweet:
        rule = "empty"
    elif not cleaned_retweet and is_hashtags_only(cleaned):
        rule = "hashtags_only"
    elif any(word and word in both for word in exclusions):
        rule = "excluded_word"
    elif user_name and user_name in both:
        rule = "own_name"
    else:
        rule = None
    return Verdict(cleaned, cleaned_retweet, rule)
