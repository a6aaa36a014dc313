"""Labelling real and predicted posts in Ray Data actors (each loads its labeller once), and scoring
every predicted post against its real one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import pyarrow as pa

from cluster.schemas import REAL_LABELS, SCORED
from serve import Labeler, check_labels, make_labeler
from serve.evaluate.metrics import micro_metrics

log = logging.getLogger(__name__)



def real_posts(predictions: pa.Table) -> pa.Table:
    """One row per real post (by mid, with the topic it was first predicted under)."""
    first: dict[str, tuple[str, str]] = {}
    for mid, topic, text in zip(*(predictions[name].to_pylist() for name in ("mid", "topic", "real")), strict=True):
        first.setdefault(mid, (topic, text))
    return pa.table({"mid": list(first), "topic": [topic for topic, _ in first.values()],
                     "real": [text for _, text in first.values()]})


def label_real_posts(predictions: pa.Table, labeler: dict[str, Any]) -> tuple[dict[str, str], str]:
    """mid -> label of every real post, each labelled once; and the labeller's name."""
    rows = map_rows(real_posts(predictions), RealLabels, labeler)
    log.info("labelled %d real posts, each once, for %d prediction rows", len(rows), predictions.num_rows)
    return {row["mid"]: row["real_label"] for row in rows}, rows[0]["labeler"]


def map_rows(table: pa.Table, actor: type, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """`table` through one `actor` (a Ray Data actor: its labeller loads once), as rows."""
    import ray
    from ray.data import ActorPoolStrategy

    return (
        ray.data.from_arrow(table)
        .map_batches(actor, batch_format="pyarrow", batch_size=256, compute=ActorPoolStrategy(size=1),
                     num_cpus=0.5, fn_constructor_kwargs=kwargs)
        .take_all()
    )


def label_by_topic(labeler: Labeler, texts: list[str], topics: list[str]) -> list[str]:
    """Labels for `texts`, asked topic by topic (the LLM judge's prompt names the topic)."""
    by_topic: dict[str, list[int]] = defaultdict(list)
    for index, topic in enumerate(topics):
        by_topic[topic].append(index)
    labels = [""] * len(texts)
    for topic, indices in by_topic.items():
        posts = [texts[i] for i in indices]
        for i, label in zip(indices, check_labels(labeler, posts, labeler.label(posts, topic)), strict=True):
            labels[i] = label
    return labels


def _labeler_in_worker(spec: str, options: dict[str, Any]) -> Labeler:
    """The labeller, built in a Ray worker whose log records are redacted from the start: a judge's key
    (read from this worker's environment, never from the actor's arguments) included."""
    from cluster.logs import register_secrets_from_env

    register_secrets_from_env()
    return make_labeler(spec, **options)


class RealLabels:
    """Labels real posts (a table of unique mid, topic, real)."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        self.labeler = _labeler_in_worker(spec, options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        labels = label_by_topic(self.labeler, batch["real"].to_pylist(), batch["topic"].to_pylist())
        return pa.table({"mid": batch["mid"], "real_label": labels, "labeler": [self.labeler.name] * len(labels)},
                        schema=REAL_LABELS)


class Scorer:
    """Labels predicted posts and scores each row against its real post (labelled already, by mid)."""

    def __init__(self, spec: str, options: dict[str, Any], real_labels: dict[str, str]) -> None:
        self.labeler = _labeler_in_worker(spec, options)
        self.real_labels = real_labels

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        predicted = label_by_topic(self.labeler, [row["prediction"] for row in rows], [row["topic"] for row in rows])
        out = []
        for row, label in zip(rows, predicted, strict=True):
            out.append({
                "method": row["method"], "topic": row["topic"], "user_id": row["user_id"], "mid": row["mid"],
                "sample": row["sample"], "predicted_label": label, "real_label": self.real_labels[row["mid"]],
                **micro_metrics(row["prediction"], row["real"]),
            })
        return pa.Table.from_pylist(out, schema=SCORED)
