"""The history baseline: a non-LLM predictor from the user's retrieved history posts.

For each case predicted (topic, user, target post), build-dataset's retrieval picked the user's
most relevant history posts (`<dataset>/retrieval`, schema `cluster.schemas.RETRIEVAL`). The
baseline labels them with the evaluation labeller and predicts:

- micro: the plurality label of the case's labelled history posts (a tie for the most: neutral;
  no labelled post: unlabelled);
- macro: per topic, the pooled distribution of every labelled history post of the topic's cases
  (not the distribution of the plurality labels);
- the positive share a user's posts get (for `spearman_stance`): the share of positive posts among
  the user's labelled history posts of that topic's cases.

It writes no text, so its text metrics (ROUGE, BLEU, length) are n/a. It is scored as the method
`history-baseline` beside the prediction files.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from cluster.config import ConfigError
from cluster.parquet import read_table_dir
from cluster.schemas import RETRIEVAL
from serve import SENTIMENTS, UNLABELLED

HISTORY_BASELINE = "history-baseline"
SEPARATOR = "#h"  # a history post's key: "<case mid>#h<index>"


def retrieval_dir(dataset: Path) -> Path:
    """`<dataset>/retrieval`, checked before Ray starts."""
    directory = Path(dataset) / "retrieval"
    if not directory.is_dir():
        raise ConfigError(f"dataset: {directory}: no retrieval table (give build-dataset's output_dir)")
    return directory


def load_history(dataset: Path) -> dict[tuple[str, str, str], list[str]]:
    """(topic, user_id, mid) -> the retrieved history texts of that case, most relevant first."""
    try:
        table = read_table_dir(retrieval_dir(dataset), RETRIEVAL).select(["topic", "user_id", "mid", "history_texts"])
    except (pa.ArrowInvalid, OSError) as error:
        raise ConfigError(f"dataset: {dataset}/retrieval: unreadable ({error})") from None
    return {(row["topic"], row["user_id"], row["mid"]): list(row["history_texts"] or [])
            for row in table.to_pylist()}


def history_posts(cases: list[tuple[str, str, str]], history: dict[tuple[str, str, str], list[str]]) -> pa.Table:
    """The cases' history posts as a table to label (mid: '<case mid>#h<i>', topic, real: the text)."""
    rows = [(f"{mid}{SEPARATOR}{i}", topic, text)
            for topic, user, mid in cases for i, text in enumerate(history.get((topic, user, mid), []))]
    return pa.table({"mid": [r[0] for r in rows], "topic": [r[1] for r in rows], "real": [r[2] for r in rows]},
                    schema=pa.schema([("mid", pa.string()), ("topic", pa.string()), ("real", pa.string())]))


def plurality(labels: list[str]) -> str:
    """The most frequent sentiment; a tie for the most is neutral; nothing labelled is unlabelled."""
    counts = Counter(label for label in labels if label in SENTIMENTS)
    if not counts:
        return UNLABELLED
    ranked = counts.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "neutral"
    return ranked[0][0]


def baseline(cases: list[tuple[str, str, str]], history: dict[tuple[str, str, str], list[str]],
             labels: dict[str, str], real_labels: dict[str, str]) -> dict[str, Any]:
    """The baseline's scored rows (SCORED, sample 0, no text metrics), its pooled labels per topic, the
    positive share per (topic, user), and how many cases had no retrieved history."""
    rows, pools, per_user = [], defaultdict(list), defaultdict(list)
    missing = 0
    for topic, user, mid in cases:
        texts = history.get((topic, user, mid))
        if texts is None:
            missing += 1
        case_labels = [labels.get(f"{mid}{SEPARATOR}{i}", UNLABELLED) for i in range(len(texts or []))]
        pools[topic] += case_labels
        per_user[(topic, user)] += [label for label in case_labels if label in SENTIMENTS]
        rows.append({"method": HISTORY_BASELINE, "topic": topic, "user_id": user, "mid": mid, "sample": 0,
                     "predicted_label": plurality(case_labels), "real_label": real_labels[mid],
                     "rouge1": None, "rouge2": None, "rougeL": None, "bleu4": None, "length_ratio": None})
    shares = {key: labels.count("positive") / len(labels) for key, labels in per_user.items() if labels}
    return {"rows": rows, "pools": dict(pools), "shares": shares, "missing": missing}
