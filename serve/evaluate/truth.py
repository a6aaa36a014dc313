"""Evaluating against known truth (a run on the local simulator, whose true sentiments are known).

The truth file (`EvaluateConfig.truth`, schema `cluster.schemas.TRUTH`; the simulator writes it
with `crawl_actors.simulator.truth_table`) gives each real post's true sentiment, and optionally
its author's stance on the topic's category and the topic's terms. With it:

- every real post's label is its true sentiment (micro accuracy and macro-F1 against the truth,
  macro divergences against the true crowd), and the evaluation labeller's own labels of the real
  posts are scored against the truth (`labeller_vs_truth`: accuracy, macro-F1, posts), so
  labeller error is visible;
- `spearman_stance`: Spearman's rank correlation between each user's predicted positive share on a
  topic (over all the samples of the user's posts on it) and the user's true stance on its category;
- `topic_mention`: the share of predicted posts that name the topic or one of its terms;
- `wrong_hashtag`: the share of predicted posts that carry hashtags, none of them the topic's (a
  model that writes another topic's `#hashtag#` remembers topics instead of reading the news).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.config import ConfigError
from cluster.schemas import TRUTH
from cluster.text import hashtags
from serve import SENTIMENTS
from serve.evaluate.metrics import accuracy, macro_f1, spearman

POST_SHARES = ("topic_mention", "wrong_hashtag")  # per method: the share of its posts that do each


@dataclass
class Truth:
    sentiment: dict[str, str]  # mid -> positive | neutral | negative
    stance: dict[str, float] = field(default_factory=dict)  # mid -> the author's stance on the topic's category
    terms: dict[str, list[str]] = field(default_factory=dict)  # topic -> its terms


def load_truth(path: Path) -> Truth:
    """The truth file, checked: readable Parquet with mid and sentiment, sentiments among SENTIMENTS."""
    if not path.exists():
        raise ConfigError(f"truth: {path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ConfigError(f"truth: {path}: not a readable Parquet file ({error})") from None
    missing = [name for name in ("mid", "sentiment") if name not in table.column_names]
    if missing:
        raise ConfigError(f"truth: {path}: missing column(s) {missing} (write it with "
                          "crawl_actors.simulator.truth_table)")
    for column in TRUTH.names:
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, TRUTH.field(column).type))
    try:
        rows = table.select(TRUTH.names).cast(TRUTH).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ConfigError(f"truth: {path}: a column has the wrong type ({error})") from None
    bad = sorted({str(row["sentiment"]) for row in rows} - set(SENTIMENTS))
    if bad:
        raise ConfigError(f"truth: {path}: sentiment must be one of {SENTIMENTS}, found {bad[:5]}")
    truth = Truth({row["mid"]: row["sentiment"] for row in rows})
    truth.stance = {row["mid"]: row["stance"] for row in rows if row["stance"] is not None}
    for row in rows:
        if row["topic"] is not None and row["topic_terms"]:
            truth.terms.setdefault(row["topic"], list(row["topic_terms"]))
    return truth


def check_coverage(truth: Truth, mids: Iterable[str], path: Path) -> None:
    """Every real post predicted must have a true sentiment: a truth file of another run is an error."""
    missing = sorted(set(mids) - set(truth.sentiment))
    if missing:
        raise ConfigError(f"truth: {path} has no true sentiment for {len(missing)} predicted real post(s), "
                          f"e.g. mid {missing[0]}: is it the truth of this run?")


def labeller_vs_truth(labelled: dict[str, str], truth: Truth) -> dict[str, Any]:
    """The evaluation labeller's labels of the real posts against their true sentiments."""
    mids = sorted(set(labelled) & set(truth.sentiment))
    predicted, real = [labelled[m] for m in mids], [truth.sentiment[m] for m in mids]
    return {"accuracy": _none_if_nan(accuracy(predicted, real)), "macro_f1": _none_if_nan(macro_f1(predicted, real)),
            "posts": len(mids), "unlabelled": sum(label not in SENTIMENTS for label in predicted)}


def positive_shares(rows: Iterable[dict[str, Any]], label: str = "predicted_label") -> dict[tuple[str, str], float]:
    """(topic, user_id) -> share of positive among the labelled `label`s of the rows (all samples)."""
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        if row[label] in SENTIMENTS:
            entry = counts[(row["topic"], row["user_id"])]
            entry[0] += row[label] == "positive"
            entry[1] += 1
    return {key: positive / total for key, (positive, total) in counts.items()}


def user_stances(rows: Iterable[dict[str, Any]], truth: Truth) -> dict[tuple[str, str], float]:
    """(topic, user_id) -> the user's true stance on the topic's category (from any of its posts)."""
    return {(row["topic"], row["user_id"]): truth.stance[row["mid"]] for row in rows if row["mid"] in truth.stance}


def stance_pairs(shares: dict[tuple[str, str], float],
                 stances: dict[tuple[str, str], float]) -> list[tuple[float, float]]:
    """(true stance, predicted positive share) of every (topic, user) that has both."""
    return [(stances[key], share) for key, share in sorted(shares.items()) if key in stances]


def stance_correlation(pairs: list[tuple[float, float]]) -> float | None:
    return _none_if_nan(spearman([s for s, _ in pairs], [p for _, p in pairs])) if len(pairs) > 2 else None


def mentions(text: str | None, topic: str, terms: dict[str, list[str]]) -> bool:
    """Whether a post names its topic (the hashtag's text) or one of the topic's terms."""
    if not text:
        return False
    return any(term and term in text for term in [topic.strip("#"), *terms.get(topic, [])])


def wrong_hashtag(text: str | None, topic: str) -> bool:
    """Whether a post carries hashtags (`#...#`) and none of them is its topic's."""
    tags = {tag.strip() for tag in hashtags(text)}
    return bool(tags) and topic.strip("#").strip() not in tags


def _none_if_nan(value: float) -> float | None:
    return None if value != value else value
