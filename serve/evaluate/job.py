"""`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.

Two Ray Data passes: the first labels each real post once (by mid, however many samples and
methods predict it), the second labels every predicted post and scores the micro metrics per row.
Then the driver aggregates: micro averages per method, and per method and topic the predicted
sentiment distribution against the real one (macro metrics, averaged over the topics that have
both). Writes `scored.parquet`, `summary.parquet`, `macro.parquet`, `report.md` and its PNG plots.

The labeller is chosen as serve chooses it (`serve.make_labeler`): offline, llm-judge
(options from `judge`), placeholder-unlabelled, or "package.module:factory".
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.parquet import atomic_write_parquet
from cluster.ray_connect import ray_session
from cluster.schemas import MACRO, PREDICTIONS, SCORED
from serve import SENTIMENTS, Labeler, check_labels, labeler_factory, make_labeler
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.metrics import (
    MACRO_METRICS,
    accuracy,
    distribution,
    macro_f1,
    macro_metrics,
    micro_metrics,
)

log = logging.getLogger(__name__)

MEAN = "(mean)"
MICRO = ("rouge1", "rouge2", "rougeL", "bleu4", "length_ratio")
SUMMARY = pa.schema(
    [("method", pa.string()), ("predictions", pa.int64()), *((name, pa.float64()) for name in MICRO),
     ("sentiment_accuracy", pa.float64()), ("sentiment_macro_f1", pa.float64()), ("js", pa.float64()),
     ("kl", pa.float64()), ("tv", pa.float64()), ("emd", pa.float64()), ("unlabelled", pa.int64()),
     ("real_unlabelled", pa.int64()), ("labeler", pa.string())]
)
REAL_LABELS = pa.schema([("mid", pa.string()), ("real_label", pa.string()), ("labeler", pa.string())])


class PredictionsError(ValueError):
    """A prediction file that cannot be evaluated, and why."""


def run(config: EvaluateConfig) -> int:
    if not config.predictions:
        print("socialalign evaluate: give at least one --predictions file (from socialalign predict)")
        return 2
    try:
        tables = [load_predictions(Path(path)) for path in config.predictions]
        labeler_factory(config.labeler)
        labeler_options(config)
    except ValueError as error:  # PredictionsError, or a labeller that cannot be built: before Ray starts
        print(f"socialalign evaluate: {error}")
        return 2
    with ray_session(config.ray):
        report = evaluate(config, pa.concat_tables(tables))
    print(f"evaluation of {', '.join(report['methods'])}: report at {report['report']}")
    return 0


def load_predictions(path: Path) -> pa.Table:
    """A prediction file or directory, checked: readable Parquet, the columns predict writes, rows."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not path.exists():
        raise PredictionsError(f"{path}: no such prediction file")
    if not files:
        raise PredictionsError(f"{path}: no Parquet files in this directory")
    pieces = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise PredictionsError(f"{file}: not a readable Parquet file ({error})") from None
        missing = [name for name in PREDICTIONS.names if name not in table.column_names]
        required = {field.name for field in PREDICTIONS if not field.nullable}
        if missing_required := sorted(set(missing) & required):
            raise PredictionsError(f"{file}: missing column(s) {missing_required} (write it with socialalign predict)")
        for name in missing:
            table = table.append_column(name, pa.nulls(table.num_rows, PREDICTIONS.field(name).type))
        try:
            pieces.append(table.select(PREDICTIONS.names).cast(PREDICTIONS))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise PredictionsError(f"{file}: a column has the wrong type ({error})") from None
    table = pa.concat_tables(pieces)
    if table.num_rows == 0:
        raise PredictionsError(f"{path}: holds no predictions")
    return table


def evaluate(config: EvaluateConfig, predictions: pa.Table) -> dict[str, Any]:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    labeler = {"spec": config.labeler, "options": labeler_options(config)}
    real_labels, reported_name = label_real_posts(predictions, labeler)
    scored = _map(predictions, Scorer, {**labeler, "real_labels": real_labels})
    table = pa.Table.from_pylist(scored, schema=SCORED)
    atomic_write_parquet(table, out / "scored.parquet")
    labeler_name = _labeler_name(config, reported_name)
    summary, macro = aggregate(table.to_pylist(), labeler_name)
    atomic_write_parquet(pa.Table.from_pylist(summary, schema=SUMMARY), out / "summary.parquet")
    atomic_write_parquet(pa.Table.from_pylist(macro, schema=MACRO), out / "macro.parquet")
    from serve.evaluate.report import write_report

    report = write_report(out, summary, macro, labeler_name)
    return {"methods": [row["method"] for row in summary], "report": str(report)}


def real_posts(predictions: pa.Table) -> pa.Table:
    """One row per real post (by mid, with the topic it was first predicted under)."""
    first: dict[str, tuple[str, str]] = {}
    for mid, topic, text in zip(*(predictions[name].to_pylist() for name in ("mid", "topic", "real"))):
        first.setdefault(mid, (topic, text))
    return pa.table({"mid": list(first), "topic": [topic for topic, _ in first.values()],
                     "real": [text for _, text in first.values()]})


def label_real_posts(predictions: pa.Table, labeler: dict[str, Any]) -> tuple[dict[str, str], str]:
    """mid -> label of every real post, each labelled once; and the labeller's name."""
    rows = _map(real_posts(predictions), RealLabels, labeler)
    log.info("labelled %d real posts, each once, for %d prediction rows", len(rows), predictions.num_rows)
    return {row["mid"]: row["real_label"] for row in rows}, rows[0]["labeler"]


def _map(table: pa.Table, actor: type, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
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
        for i, label in zip(indices, check_labels(labeler, posts, labeler.label(posts, topic))):
            labels[i] = label
    return labels


class RealLabels:
    """Labels real posts (a table of unique mid, topic, real)."""

    def __init__(self, spec: str, options: dict[str, Any]) -> None:
        self.labeler = make_labeler(spec, **options)

    def __call__(self, batch: pa.Table) -> pa.Table:
        labels = label_by_topic(self.labeler, batch["real"].to_pylist(), batch["topic"].to_pylist())
        return pa.table({"mid": batch["mid"], "real_label": labels, "labeler": [self.labeler.name] * len(labels)},
                        schema=REAL_LABELS)


class Scorer:
    """Labels predicted posts and scores each row against its real post (labelled already, by mid)."""

    def __init__(self, spec: str, options: dict[str, Any], real_labels: dict[str, str]) -> None:
        self.labeler = make_labeler(spec, **options)
        self.real_labels = real_labels

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        predicted = label_by_topic(self.labeler, [row["prediction"] for row in rows], [row["topic"] for row in rows])
        out = []
        for row, label in zip(rows, predicted):
            out.append({
                "method": row["method"], "topic": row["topic"], "user_id": row["user_id"], "mid": row["mid"],
                "sample": row["sample"], "predicted_label": label, "real_label": self.real_labels[row["mid"]],
                **micro_metrics(row["prediction"], row["real"]),
            })
        return pa.Table.from_pylist(out, schema=SCORED)


def aggregate(rows: list[dict[str, Any]], labeler: str) -> tuple[list[dict], list[dict]]:
    """Per method: micro averages and the macro metrics per topic and on average."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_method[row["method"]].append(row)
    summary, macro = [], []
    for method, items in sorted(by_method.items()):
        topics: dict[str, list[dict]] = defaultdict(list)
        for row in items:
            topics[row["topic"]].append(row)
        per_topic = [_topic_macro(method, topic, topic_rows) for topic, topic_rows in sorted(topics.items())]
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
            "labeler": labeler,
        })
    return summary, macro


def _topic_macro(method: str, topic: str, rows: list[dict]) -> dict[str, Any]:
    """One topic's distributions and macro metrics; None where one side has no labelled post."""
    real, predicted = distribution(_real_labels(rows)), distribution([row["predicted_label"] for row in rows])
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


def labeler_options(config: EvaluateConfig) -> dict[str, Any]:
    """Keyword arguments of the labeller: the `judge` endpoint for llm-judge, none for the others."""
    if config.labeler != "llm-judge":
        return {}
    judge = config.judge
    if not judge.base_url or not judge.model:
        raise ValueError("labeler=llm-judge needs judge.base_url and judge.model (any OpenAI-compatible endpoint)")
    return {"base_url": judge.base_url, "model": judge.model,
            "api_key": judge.api_key.get_secret_value() if judge.api_key else None,
            "concurrency": judge.concurrency, "timeout_s": judge.timeout_s, "max_retries": judge.max_retries}


def _labeler_name(config: EvaluateConfig, reported: str) -> str:
    return f"{reported} ({config.judge.model})" if config.labeler == "llm-judge" else reported
