"""The oracle: each user's post on a topic drawn again, with the same traits and fresh randomness.

A model that knew every user's traits exactly could do no better than this: the spread between
the oracle's samples and the real post is the sampling noise of the simulator itself, so the
oracle's scores are the ceiling a predictor can reach on the simulator's truth.

    samples = oracle_samples(sim, "国产大模型开源", samples=5, seed=0)   # rows: mid, user_id, sample, text, sentiment
    per_user = oracle_sentiments(sim, "国产大模型开源", samples=5)        # user_id -> [sentiment, ...]
    table = oracle_predictions(sim, sft_test_rows, samples=5)             # PREDICTIONS rows, method "oracle"

Each sample's generator is seeded by (seed, mid, sample) alone, so a sample does not depend on
which other posts are drawn, and another `seed` gives other samples. True sentiments follow
`corpus.true_sentiment` (majority polarity of the judgements written; a tie or none: neutral).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from cluster.schemas import PREDICTIONS
from crawl_actors.simulator.corpus import resample_topic_post
from crawl_actors.simulator.truth import corpus_of

ORACLE = "oracle"


def oracle_samples(source: Any, topic: str, samples: int = 5, seed: int = 0,
                   mids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """For every real post of `topic` (or only `mids`), `samples` fresh posts by its author: rows
    {mid, user_id, topic, sample, text, sentiment}, by mid in search order, then sample."""
    corpus = corpus_of(source)
    if samples < 1:
        raise ValueError("samples must be >= 1")
    chosen = next((t for t in corpus.topics if t.name == topic.strip("#")), None)
    if chosen is None:
        raise ValueError(f"no topic {topic!r} in the simulator (it has {[t.name for t in corpus.topics]})")
    wanted = list(corpus.topic_posts[chosen.name] if mids is None else mids)
    unknown = [mid for mid in wanted if mid not in corpus.posts]
    if unknown:
        raise ValueError(f"no post(s) {unknown[:3]} in the simulator")
    rows = []
    for mid in wanted:
        user = corpus.users[corpus.posts[mid].uid]
        for k in range(samples):
            text, sentiment = resample_topic_post(corpus, chosen, user, random.Random(f"oracle:{seed}:{mid}:{k}"))
            rows.append({"mid": mid, "user_id": user.uid, "topic": chosen.name, "sample": k, "text": text,
                         "sentiment": sentiment})
    return rows


def oracle_sentiments(source: Any, topic: str, samples: int = 5, seed: int = 0) -> dict[str, list[str]]:
    """user_id -> the true sentiments of the oracle's samples for that user's posts on `topic`
    (`samples` per real post, in order; a user with several posts on the topic gets each post's)."""
    per_user: dict[str, list[str]] = {}
    for row in oracle_samples(source, topic, samples, seed):
        per_user.setdefault(row["user_id"], []).append(row["sentiment"])
    return per_user


def oracle_predictions(source: Any, cases: Iterable[dict[str, Any]], samples: int = 5, seed: int = 0,
                       method: str = ORACLE) -> pa.Table:
    """The oracle as a prediction set (`cluster.schemas.PREDICTIONS`), for `socialalign evaluate`:
    per case (a row with topic, user_id, mid, and real or output: e.g. an SFT test row), `samples`
    rows whose prediction is a fresh post of the case's real post. A case whose post or user the
    simulator does not have is a ValueError."""
    corpus = corpus_of(source)
    rows = []
    for case in cases:
        mid = case["mid"]
        post = corpus.posts.get(mid)
        if post is None or post.uid != case["user_id"]:
            raise ValueError(f"case {case['topic']}|{case['user_id']}|{mid}: not a post of that user in the simulator")
        real = case.get("real", case.get("output"))
        for row in oracle_samples(corpus, case["topic"], samples, seed, mids=[mid]):
            rows.append({"method": method, "topic": case["topic"], "user_id": row["user_id"], "mid": mid,
                         "sample": row["sample"], "variant": case.get("variant"), "prediction": row["text"],
                         "real": real, "adapter": None, "prompt_tokens": None, "completion_tokens": None,
                         "gates": None})
    return pa.Table.from_pylist(rows, schema=PREDICTIONS)
