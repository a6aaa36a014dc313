"""The simulator's truth: each post's true sentiment, the evaluation's truth table, and the oracle."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.schemas import PREDICTIONS, TRUTH
from crawl_actors.simulator import (
    SimulatorConfig,
    oracle_predictions,
    oracle_samples,
    oracle_sentiments,
    true_sentiment,
    truth_table,
)
from crawl_actors.simulator.corpus import build_corpus
from crawl_actors.simulator.lexicon import NEGATIVE_WORDS, POSITIVE_WORDS

# The digest of every post and user of this corpus, taken before truth was recorded: recording it
# must not change a single text, time, id or trait. Taken again when history posts began to name their
# category's topic aspects (lexicon.HISTORY_SUBJECTS) and again when the topic templates grew to three a
# category: deliberate changes of the generated text.
PINNED = {"seed": 7, "num_users": 40, "history_posts": (5, 30), "hot_topic_posts": 200, "topic_posts": 60,
          "num_topics": 4}
PINNED_DIGEST = "6f12aaa59a3c5fb2abf16c426444e253d830df558e73fe343ee4dfb6279741e3"
WORLD = SimulatorConfig(seed=11, num_users=60, history_posts=(10, 30), hot_topic_posts=200, topic_posts=80,
                        num_topics=4)


def digest(corpus) -> str:
    h = hashlib.sha256()
    for mid in sorted(corpus.posts):
        p = corpus.posts[mid]
        h.update(json.dumps([mid, p.uid, p.text, str(p.created_at), list(p.pics), p.video_url, p.topic, p.retweet_of,
                             p.is_pinned, [s.kind + s.value for s in p.segments]], ensure_ascii=False).encode())
    for uid in sorted(corpus.users):
        h.update(repr(corpus.users[uid]).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(WORLD)


def lexicon_label(text: str) -> str:
    balance = sum(text.count(w) for w in POSITIVE_WORDS) - sum(text.count(w) for w in NEGATIVE_WORDS)
    return "positive" if balance > 0 else "negative" if balance < 0 else "neutral"


def test_recording_truth_changes_no_generated_text() -> None:
    assert digest(build_corpus(SimulatorConfig(**PINNED))) == PINNED_DIGEST


@given(st.lists(st.sampled_from(["positive", "negative", "neutral"]), max_size=12))
def test_true_sentiment_is_the_majority_polarity_ties_and_none_neutral(judgements) -> None:
    pos, neg = judgements.count("positive"), judgements.count("negative")
    assert true_sentiment(judgements) == ("positive" if pos > neg else "negative" if neg > pos else "neutral")


def test_true_sentiment_edge_cases() -> None:
    assert true_sentiment([]) == "neutral"
    assert true_sentiment(["neutral", "neutral"]) == "neutral"
    assert true_sentiment(["positive", "negative"]) == "neutral"
    assert true_sentiment(["positive", "neutral", "neutral"]) == "positive"


def test_each_post_records_the_judgements_written_into_it(corpus) -> None:
    posts = list(corpus.posts.values())
    # The judgement words are exactly the polarity words of the text: the truth is what the text says.
    assert all(lexicon_label(post.text) == post.sentiment for post in posts)
    for post in posts:
        words = sum(post.text.count(w) for w in POSITIVE_WORDS + NEGATIVE_WORDS)
        assert words == sum(j != "neutral" for j in post.judgements)
    reposts = [post for post in posts if post.retweet_of]
    assert reposts and all(post.judgements == () and post.sentiment == "neutral" for post in reposts)
    topic_posts = [post for post in posts if post.topic]
    assert {post.sentiment for post in topic_posts} == {"positive", "neutral", "negative"}
    assert all(post.category for post in topic_posts)


def test_ground_truth_exposes_sentiments_with_the_traits(corpus) -> None:
    from crawl_actors.simulator.truth import ground_truth

    truth = ground_truth(corpus)
    rows = {row["mid"]: row for row in truth["sentiments"]}
    assert set(rows) == {row["mid"] for row in truth["posts"] + truth["history"]}
    traits = {row["user_id"]: row["stances"] for row in truth["traits"]}
    for row in rows.values():
        post = corpus.posts[row["mid"]]
        assert row["sentiment"] == post.sentiment and row["user_id"] == post.uid
        assert (row["positive"], row["negative"], row["neutral"]) == tuple(
            post.judgements.count(k) for k in ("positive", "negative", "neutral"))
        assert row["stance"] == (traits[post.uid][post.category] if post.category else None)
    # The stance sets the odds: strongly positive users mostly write positive posts, and the other way.
    topic_rows = [row for row in rows.values() if row["topic"]]
    pro = [row["sentiment"] for row in topic_rows if row["stance"] > 0.5]
    con = [row["sentiment"] for row in topic_rows if row["stance"] < -0.5]
    assert pro.count("positive") / len(pro) > 0.75 and con.count("negative") / len(con) > 0.75


def test_truth_table_fits_the_schema_and_names_topics(corpus) -> None:
    table = truth_table(corpus)
    assert table.schema == TRUTH
    assert table.num_rows == sum(len(mids) for mids in corpus.topic_posts.values())
    first = corpus.topics[1]
    only = truth_table(corpus, [first.name]).to_pylist()
    assert {row["topic"] for row in only} == {first.name}
    assert only[0]["topic_terms"][0] == first.name and set(first.aspects) <= set(only[0]["topic_terms"])
    assert all(row["stance"] == corpus.users[row["user_id"]].traits.stances[first.category] for row in only)
    assert truth_table(WORLD).to_pylist() == table.to_pylist()  # a config builds the same world
    with pytest.raises(ValueError, match="no such topic"):
        truth_table(corpus, ["没有这个话题"])


def test_the_oracle_draws_fresh_posts_with_the_same_traits(corpus) -> None:
    before = digest(corpus)
    topic = corpus.topics[1]
    rows = oracle_samples(corpus, topic.name, samples=8, seed=0)
    assert digest(corpus) == before  # the corpus is not touched
    assert len(rows) == 8 * len(corpus.topic_posts[topic.name])
    assert oracle_samples(corpus, topic.name, samples=8, seed=0) == rows  # reproducible
    other = oracle_samples(corpus, topic.name, samples=8, seed=1)
    assert sum(a["text"] != b["text"] for a, b in zip(rows, other, strict=True)) > 0.95 * len(rows)
    # fresh randomness: the samples differ from the real post and from each other
    assert sum(row["text"] != corpus.posts[row["mid"]].text for row in rows) > 0.95 * len(rows)
    by_mid: dict[str, set[str]] = {}
    for row in rows:
        by_mid.setdefault(row["mid"], set()).add(row["text"])
    assert sum(len(texts) == 8 for texts in by_mid.values()) > 0.9 * len(by_mid)
    # each sample is a post on the topic in the user's way, and its sentiment is what its text says
    assert all(f"#{topic.name}#" in row["text"] and lexicon_label(row["text"]) == row["sentiment"] for row in rows)
    # same traits: the distribution follows the user's stance on the topic's category
    stance = {row["user_id"]: corpus.users[row["user_id"]].traits.stances[topic.category] for row in rows}
    per_user = oracle_sentiments(corpus, topic.name, samples=8, seed=0)
    assert set(per_user) == set(stance)
    share = {uid: labels.count("positive") / len(labels) for uid, labels in per_user.items()}
    pro = [share[uid] for uid in share if stance[uid] > 0.5]
    con = [share[uid] for uid in share if stance[uid] < -0.5]
    assert pro and con and sum(pro) / len(pro) > 0.75 > 0.25 > sum(con) / len(con)


def test_the_oracle_as_a_prediction_set(corpus) -> None:
    topic = corpus.topics[0]
    cases = [{"topic": topic.name, "user_id": corpus.posts[mid].uid, "mid": mid, "output": corpus.posts[mid].text,
              "variant": "full"} for mid in corpus.topic_posts[topic.name][:5]]
    table = oracle_predictions(corpus, cases, samples=3, seed=2)
    assert table.schema == PREDICTIONS and table.num_rows == 15
    rows = table.to_pylist()
    assert {row["method"] for row in rows} == {"oracle"} and [row["sample"] for row in rows[:3]] == [0, 1, 2]
    assert all(row["real"] == corpus.posts[row["mid"]].text for row in rows)
    expected = oracle_samples(corpus, topic.name, samples=3, seed=2, mids=[case["mid"] for case in cases])
    assert [row["prediction"] for row in rows] == [row["text"] for row in expected]
    with pytest.raises(ValueError, match="not a post of that user"):
        oracle_predictions(corpus, [{**cases[0], "user_id": "1"}])
    with pytest.raises(ValueError, match="no topic"):
        oracle_samples(corpus, "没有这个话题")
    assert isinstance(table, pa.Table)
