"""`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.

A Ray Data job labels every predicted post and every real post (each real post once), scores the
micro metrics per row, then the driver aggregates: micro averages per method, and per method and
topic the predicted sentiment distribution against the real one (macro metrics, averaged over
topics). Writes `scored.parquet`, `summary.parquet`, `macro.parquet`, `report.md` and its PNG plots.
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
from cluster.stage_configs import EvaluateConfig
from serve.evaluate.metrics import accuracy, distribution, macro_f1, macro_metrics, micro_metrics

log = logging.getLogger(__name__)

MEAN = "(mean)"
MICRO = ("rouge1", "rouge2", "rougeL", "bleu4", "length_ratio")
SUMMARY = pa.schema(
    [("method", pa.string()), ("predictions", pa.int64()), *((name, pa.float64()) for name in MICRO),
     ("sentiment_accuracy", pa.float64()), ("sentiment_macro_f1", pa.float64()), ("js", pa.float64()),
     ("kl", pa.float64()), ("tv", pa.float64()), ("emd", pa.float64()), ("labeler", pa.string())]
)


class PredictionsError(ValueError):
    """A prediction file that cannot be evaluated, and why."""


def run(config: EvaluateConfig) -> int:
    if not config.predictions:
        print("socialalign evaluate: give at least one --predictions file (from socialalign predict)")
        return 2
    try:
        tables = [load_predictions(Path(path)) for path in config.predictions]
    except PredictionsError as error:
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
    import ray
    from ray.data import ActorPoolStrategy

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    options = _labeler_options(config)
    scored = (
        ray.data.from_arrow(predictions)
        .map_batches(Scorer, batch_format="pyarrow", batch_size=256, compute=ActorPoolStrategy(size=1),
                     num_cpus=0.5, fn_constructor_kwargs={"labeler": config.labeler, "options": options})
        .take_all()
    )
    table = pa.Table.from_pylist(scored, schema=SCORED)
    atomic_write_parquet(table, out / "scored.parquet")
    labeler_name = _labeler_name(config)
    summary, macro = aggregate(table.to_pylist(), labeler_name)
    atomic_write_parquet(pa.Table.from_pylist(summary, schema=SUMMARY), out / "summary.parquet")
    atomic_write_parquet(pa.Table.from_pylist(macro, schema=MACRO), out / "macro.parquet")
    from serve.evaluate.report import write_report

    report = write_report(out, summary, macro, labeler_name)
    return {"methods": [row["method"] for row in summary], "report": str(report)}


class Scorer:
    """Labels predicted and real posts and scores each row (a Ray Data actor: the labeller loads once)."""

    def __init__(self, labeler: str, options: dict[str, Any]) -> None:
        from serve.evaluate.labelers import LLMJudgeLabeler, OfflineLabeler

        self.labeler = LLMJudgeLabeler(**options) if labeler == "llm" else OfflineLabeler()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        by_topic: dict[str | None, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            by_topic[row["topic"]].append(index)
        predicted, real = [None] * len(rows), [None] * len(rows)
        for topic, indices in by_topic.items():
            texts = [rows[i]["prediction"] for i in indices] + [rows[i]["real"] for i in indices]
            labels = self.labeler.label(texts, topic)
            for k, i in enumerate(indices):
                predicted[i], real[i] = labels[k], labels[len(indices) + k]
        out = []
        for row, p_label, r_label in zip(rows, predicted, real):
            out.append({
                "method": row["method"], "topic": row["topic"], "user_id": row["user_id"], "mid": row["mid"],
                "sample": row["sample"], "predicted_label": p_label, "real_label": r_label,
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
        per_topic = []
        for topic, topic_rows in sorted(topics.items()):
            # Each real post counts once, however many samples were drawn for it.
            real_labels = list({row["mid"]: row["real_label"] for row in topic_rows}.values())
            real, pred = distribution(real_labels), distribution([row["predicted_label"] for row in topic_rows])
            per_topic.append({"method": method, "topic": topic, "real_distribution": list(real),
                              "predicted_distribution": list(pred), "predictions": len(topic_rows),
                              **macro_metrics(real, pred)})
        mean = {name: _mean(row[name] for row in per_topic) for name in ("js", "kl", "tv", "emd")}
        macro += per_topic + [{"method": method, "topic": MEAN, "real_distribution": None,
                               "predicted_distribution": None, "predictions": len(items), **mean}]
        labels = ([row["predicted_label"] for row in items], [row["real_label"] for row in items])
        summary.append({
            "method": method, "predictions": len(items),
            **{name: _mean(row[name] for row in items) for name in MICRO},
            "sentiment_accuracy": accuracy(*labels), "sentiment_macro_f1": macro_f1(*labels), **mean,
            "labeler": labeler,
        })
    return summary, macro


def _mean(values) -> float:
    kept = [v for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def _labeler_options(config: EvaluateConfig) -> dict[str, Any]:
    if config.labeler != "llm":
        return {}
    judge = config.judge
    if not judge.base_url or not judge.model:
        raise ValueError("labeler=llm needs judge.base_url and judge.model (any OpenAI-compatible endpoint)")
    return {"base_url": judge.base_url, "model": judge.model,
            "api_key": judge.api_key.get_secret_value() if judge.api_key else None,
            "concurrency": judge.concurrency, "timeout_s": judge.timeout_s, "max_retries": judge.max_retries}


def _labeler_name(config: EvaluateConfig) -> str:
    from serve.evaluate.labelers import LLMJudgeLabeler, OfflineLabeler

    return f"{LLMJudgeLabeler.name} ({config.judge.model})" if config.labeler == "llm" else OfflineLabeler.name
