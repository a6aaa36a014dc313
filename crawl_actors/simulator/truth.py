"""The ground truth: exactly what a perfect crawl of the simulator recovers, as table rows.

Rows carry the field names of `cluster/schemas.py` without `crawled_at`:

- topics: every crawl topic, `source` 'ai_search', `news` the AI-search summary.
- posts: every post the search finds for a topic, keyed (query, mid); `query` is the topic without
  '#', `found_by` 'search' (AI search only cites posts that search also finds). Counts are what
  the card shows (1.5万 -> 15000, 100万+ -> 1000000); `region` is the province of the region endpoint;
  `pics` the (at most 9) pictures the card shows.
- users: the authors of those posts, profile and details merged (details a user hides are None).
- history: each such user's timeline in served order (pinned first), long posts with their full
  text. Limits apply as a crawler applies them: only pages 1..max_pages_per_user, then only posts
  created at or after `since` (an old pinned post is skipped, it does not end the timeline), then
  the first max_posts_per_user of those. Every picture of a post with more than 9 (the timeline lists 9;
  a crawler takes the rest from the detail page). Texts never hold video/live cards (markup, not text).
- traits: each user's latent traits (not a crawl table; for checking what later stages learn).
- sentiments: each post of posts and history once (by mid), with its true sentiment (the majority
  polarity of the judgements the simulator wrote into it, `corpus.true_sentiment`: a tie, only
  neutral judgements or none -> neutral), its judgement counts, the category they are about and the
  user's stance on it (not a crawl table).

`truth_rows` gives the evaluation's truth file (`cluster.schemas.TRUTH`): one row per topic post.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from cluster.schemas import TRUTH
from crawl_actors.regions import province_name
from crawl_actors.simulator.config import SimulatorConfig
from crawl_actors.simulator.corpus import (
    LIST_PICS,
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    Corpus,
    Post,
    Topic,
    User,
    build_corpus,
)
from crawl_actors.simulator.render import TIMELINE_PAGE_SIZE, shown_search_count, shown_wan

DETAIL_FIELDS = ("birthday", "location", "education", "company", "registered", "sunshine_credit", "ip_region")


def ground_truth(corpus: Corpus, max_posts_per_user: int | None = None, max_pages_per_user: int | None = None,
                 since: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    posts = [_post_row(corpus, corpus.posts[mid], topic.name)
             for topic in corpus.topics for mid in corpus.topic_posts[topic.name]]
    authors = list(dict.fromkeys(row["user_id"] for row in posts))
    history = [row for uid in authors for row in _history(corpus, uid, max_posts_per_user, max_pages_per_user, since)]
    return {
        "topics": [{"topic": topic.name, "news": topic.news, "source": "ai_search"} for topic in corpus.topics],
        "posts": posts,
        "users": [_user_row(corpus.users[uid]) for uid in authors],
        "history": history,
        "traits": [_traits_row(corpus.users[uid]) for uid in authors],
        "sentiments": [_sentiment_row(corpus, corpus.posts[mid])
                       for mid in dict.fromkeys(row["mid"] for row in posts + history)],
    }


def corpus_of(source: Any) -> Corpus:
    """The corpus of a WeiboSimulator (its `.corpus`), a Corpus, or a SimulatorConfig (built anew:
    the same seed gives the same corpus)."""
    if isinstance(source, Corpus):
        return source
    if isinstance(source, SimulatorConfig):
        return build_corpus(source)
    corpus = getattr(source, "corpus", None)
    if isinstance(corpus, Corpus):
        return corpus
    raise TypeError(f"expected a WeiboSimulator, Corpus or SimulatorConfig, got {type(source).__name__}")



def truth_table(source: Any, topics: list[str] | None = None) -> pa.Table:
    """`truth_rows` of a WeiboSimulator, Corpus or SimulatorConfig as a `cluster.schemas.TRUTH` table:
    write it to Parquet and give it to `socialalign evaluate` as `truth`."""
    return pa.Table.from_pylist(truth_rows(corpus_of(source), topics), schema=TRUTH)


def truth_rows(corpus: Corpus, topics: list[str] | None = None) -> list[dict[str, Any]]:
    """The evaluation's truth (`cluster.schemas.TRUTH`): per post of each topic (all, or `topics`),
    its true sentiment, the author's stance on the topic's category, and the topic's terms (its
    name, aspects and facts: what its posts talk about)."""
    chosen = [topic for topic in corpus.topics if topics is None or topic.name in topics]
    unknown = sorted(set(topics or ()) - {topic.name for topic in chosen})
    if unknown:
        raise ValueError(f"no such topic(s) in the simulator: {unknown}")
    return [{"mid": mid, "topic": topic.name, "user_id": corpus.posts[mid].uid, "category": topic.category,
             "sentiment": corpus.posts[mid].sentiment,
             "stance": corpus.users[corpus.posts[mid].uid].traits.stances[topic.category],
             "topic_terms": topic_terms(topic)}
            for topic in chosen for mid in corpus.topic_posts[topic.name]]


def topic_terms(topic: Topic) -> list[str]:
    """What a post on `topic` talks about: its name (the hashtag's text), aspects and facts."""
    return [topic.name, *topic.aspects, *topic.facts]


def _sentiment_row(corpus: Corpus, post: Post) -> dict[str, Any]:
    user = corpus.users[post.uid]
    return {"mid": post.mid, "user_id": post.uid, "topic": post.topic, "category": post.category,
            "sentiment": post.sentiment, POSITIVE: post.judgements.count(POSITIVE),
            NEGATIVE: post.judgements.count(NEGATIVE), NEUTRAL: post.judgements.count(NEUTRAL),
            "stance": user.traits.stances[post.category] if post.category else None}


def _post_row(corpus: Corpus, post: Post, query: str) -> dict[str, Any]:
    user = corpus.users[post.uid]
    return {
        "mid": post.mid, "bid": post.bid, "user_id": post.uid, "screen_name": user.screen_name,
        "text": post.text, "topics": list(post.topics), "at_users": list(post.at_users), "location": post.location,
        "created_at": post.created_at, "source": post.source,
        "reposts_count": shown_search_count(post.reposts_count),
        "comments_count": shown_search_count(post.comments_count),
        "attitudes_count": shown_search_count(post.attitudes_count),
        "pics": list(post.pics[:LIST_PICS]), "video_url": post.video_url, "retweet_id": None,
        "user_verified": user.badge,
        "region": province_name(post.province), "query": query, "found_by": "search",
    }


def _user_row(user: User) -> dict[str, Any]:
    row = {
        "user_id": user.uid, "screen_name": user.screen_name, "gender": user.gender,
        "description": user.description, "statuses_count": user.statuses_count,
        "followers_count": shown_wan(user.followers_count), "follow_count": user.follow_count,
        "verified": user.verified, "verified_type": user.verified_type, "verified_reason": user.verified_reason,
        "urank": user.urank, "mbrank": user.mbrank,
    }
    row.update({name: user.details.get(name) for name in DETAIL_FIELDS})
    return row


def _history(corpus: Corpus, uid: str, max_posts: int | None, max_pages: int | None,
             since: datetime | None) -> list[dict[str, Any]]:
    mids = corpus.timelines[uid]
    if max_pages is not None:
        mids = mids[: max_pages * TIMELINE_PAGE_SIZE]
    posts = [corpus.posts[mid] for mid in mids]
    if since is not None:
        posts = [post for post in posts if post.created_at >= since]
    if max_posts is not None:
        posts = posts[:max_posts]
    return [_history_row(corpus, post) for post in posts]


def _history_row(corpus: Corpus, post: Post) -> dict[str, Any]:
    original = corpus.posts[post.retweet_of] if post.retweet_of else None
    return {
        "user_id": post.uid, "mid": post.mid, "bid": post.bid, "text": post.text, "topics": list(post.topics),
        "at_users": list(post.at_users), "created_at": post.created_at, "source": post.source,
        "reposts_count": post.reposts_count, "comments_count": post.comments_count,
        "attitudes_count": post.attitudes_count, "pics": list(post.pics), "video_url": post.video_url,
        "is_long_text": post.is_long, "is_pinned": post.is_pinned,
        "retweet_id": original.mid if original else None,
        "retweet_text": original.text if original else None,
        "retweet_user": corpus.users[original.uid].screen_name if original else None,
    }


def _traits_row(user: User) -> dict[str, Any]:
    traits = user.traits
    return {"user_id": user.uid, "stances": dict(traits.stances), "tone": traits.tone,
            "typical_length": traits.typical_length, "pet_phrases": list(traits.pet_phrases),
            "emoji": list(traits.emoji)}
