"""Per method: micro averages, and the macro metrics per topic and averaged over the topics."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from serve import SENTIMENTS
from serve.evaluate.metrics import MACRO_METRICS, accuracy, distribution, macro_f1, macro_metrics
from serve.evaluate.truth import POST_SHARES

MEAN = "(mean)"
MICRO = ("rouge1", "rouge2", "rougeL", "bleu4", "length_ratio")
ZERO_SHOT, ORACLE = "zero-shot", "oracle"  # the methods "gap closed" measures between
# summary figure -> gap_closed_<name>: (score - zero-shot) / (oracle - zero-shot)
GAP_CLOSED = {"js": "gap_closed_js", "tv": "gap_closed_tv", "emd": "gap_closed_emd",
              "sentiment_macro_f1": "gap_closed_macro_f1", "sentiment_accuracy": "gap_closed_accuracy",
              "spearman_stance": "gap_closed_spearman"}


def aggregate(rows: list[dict[str, Any]], labeler: str, *, pools: dict[str, dict[str, list[str]]] | None = None,
              spearman: dict[str, float | None] | None = None,
              mentions: dict[str, dict[str, float]] | None = None) -> tuple[list[dict], list[dict]]:
    """Per method: micro averages and the macro metrics per topic and on average.

    `pools`: method -> topic -> the labels whose distribution is that method's prediction for the
    topic (the history baseline's pooled history posts), instead of its rows' predicted labels.
    `spearman`: each method's spearman_stance; `mentions`: each method's topic_mention and
    wrong_hashtag (None: not measured).
    With methods named zero-shot and oracle, every row gets gap_closed_* (see `gap_closed`)."""
    pools, spearman, mentions = pools or {}, spearman or {}, mentions or {}
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    summary, macro = [], []
    for method, items in sorted(by_method.items()):
        topics: dict[str, list[dict]] = defaultdict(list)
        for row in items:
            topics[row["topic"]].append(row)
        per_topic = [_topic_macro(method, topic, topic_rows, pools.get(method, {}).get(topic))
                     for topic, topic_rows in sorted(topics.items())]
        mean = {name: _mean(row[name] for row in per_topic) for name in MACRO_METRICS}
        macro += per_topic + [{"method": method, "topic": MEAN, "real_distribution": None,
                               "predicted_distribution": None, "predictions": len(items), **mean}]
        labels = ([row["predicted_label"] for row in items], [row["real_label"] for row in items])
        summary.append({
            "method": method, "predictions": len(items),
            **{name: _mean(row[name] for row in items) for name in MICRO},
            "sentiment_accuracy": accuracy(*labels), "sentiment_macro_f1": macro_f1(*labels), **mean,
            "unlabelled": sum(label not in SENTIMENTS for label in labels[0]),
            "real_unlabelled": sum(label not in SENTIMENTS for label in _real_labels(items)),
            "labeler": labeler, "spearman_stance": spearman.get(method),
            **{name: mentions.get(method, {}).get(name) for name in POST_SHARES},
        })
    return gap_closed(summary), macro


def gap_closed(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with gap_closed_<figure> = (figure - zero-shot's) / (oracle's - zero-shot's) for the
    figures of GAP_CLOSED: 0 at zero-shot, 1 at the oracle, whichever way the figure improves; None
    without both methods, a figure missing, or zero-shot already at the oracle."""
    by_method = {row["method"]: row for row in summary}
    zero, oracle = by_method.get(ZERO_SHOT), by_method.get(ORACLE)
    out = []
    for row in summary:
        gaps = {}
        for figure, name in GAP_CLOSED.items():
            values = (row.get(figure), (zero or {}).get(figure), (oracle or {}).get(figure))
            usable = all(v is not None and not math.isnan(v) for v in values) and values[2] != values[1]
            gaps[name] = (values[0] - values[1]) / (values[2] - values[1]) if usable else None
        out.append({**row, **gaps})
    return out


def _topic_macro(method: str, topic: str, rows: list[dict], pool: list[str] | None = None) -> dict[str, Any]:
    """One topic's distributions and macro metrics; None where one side has no labelled post."""
    labels = pool if pool is not None else [row["predicted_label"] for row in rows]
    real, predicted = distribution(_real_labels(rows)), distribution(labels)
    return {"method": method, "topic": topic, "real_distribution": list(real) if real else None,
            "predicted_distribution": list(predicted) if predicted else None, "predictions": len(rows),
            **macro_metrics(real, predicted)}


def _real_labels(rows: list[dict]) -> list[str]:
    """Each real post counts once, however many samples were drawn for it."""
    return list({row["mid"]: row["real_label"] for row in rows}.values())


def _mean(values) -> float | None:
    """The mean of the values there are; None (null in Parquet, n/a in the report) when there are none."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def gate_means(predictions: list[dict[str, Any]], scored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and predicted sentiment: the mean analyze and compose gate weights of the predictions
    that carry gates (`predict return_gates=true`), each prediction's entries (modules or layers)
    averaged first. Empty when no prediction has gates."""
    key = ("method", "topic", "user_id", "mid", "sample")
    labels = {tuple(row[k] for k in key): row["predicted_label"] for row in scored}
    sums: dict[tuple[str, str], list[Any]] = {}
    for row in predictions:
        if not row.get("gates"):
            continue
        label = labels.get(tuple(row[k] for k in key))
        if label not in SENTIMENTS:
            continue
        analyze, compose = _entry_mean(row["gates"], "analyze"), _entry_mean(row["gates"], "compose")
        total = sums.setdefault((row["method"], label), [0, [0.0] * len(analyze), [0.0] * len(compose)])
        if (len(total[1]), len(total[2])) != (len(analyze), len(compose)):
            raise ValueError(f"{row['method']}: predictions with different numbers of experts")
        total[0] += 1
        total[1] = [a + b for a, b in zip(total[1], analyze, strict=True)]
        total[2] = [a + b for a, b in zip(total[2], compose, strict=True)]
    methods = sorted({method for method, _ in sums})
    return [
        {"method": method, "sentiment": label, "posts": n, "analyze": [a / n for a in analyze],
         "compose": [c / n for c in compose]}
        for method in methods for label in SENTIMENTS
        if (method, label) in sums for n, analyze, compose in [sums[(method, label)]]
    ]


def _entry_mean(entries: list[dict[str, Any]], side: str) -> list[float]:
    vectors = [entry[side] for entry in entries]
    return [sum(values) / len(vectors) for values in zip(*vectors, strict=True)]


def figures(summary_row: dict[str, Any]) -> dict[str, Any]:
    """A method's summary figures for `_SUCCESS.json`: NaN (nothing to score) written as null."""
    return {name: None if isinstance(value, float) and math.isnan(value) else value
            for name, value in summary_row.items() if name not in ("method", "labeler")}
