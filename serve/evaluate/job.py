"""`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.

Two Ray Data passes: the first labels each real post once (by mid, however many samples and
methods predict it), the second labels every predicted post and scores the micro metrics per row.
Then the driver aggregates: micro averages per method, and per method and topic the predicted
sentiment distribution against the real one (macro metrics, averaged over the topics that have
both). Writes `scored.parquet`, `summary.parquet`, `macro.parquet`, `report.md` and its PNG plots,
then `_SUCCESS.json` with each method's summary figures. Predictions that carry expert gates
(`predict return_gates=true`) add their mean gates by predicted sentiment, plotted and in the report.

The labeller is chosen as serve chooses it (`serve.make_labeler`): offline, llm-judge
(options from `judge`), placeholder-unlabelled, or "package.module:factory".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.config import ConfigError
from cluster.llm import key_for_local_workers, refuse_inline_key, without_key
from cluster.parquet import atomic_write_parquet
from cluster.ray_connect import ray_session
from cluster.reports import write_success
from cluster.schemas import EVALUATION_SUMMARY, MACRO, SCORED
from serve import labeler_factory
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.labelling import Scorer, label_real_posts, map_rows
from serve.evaluate.predictions import load_predictions
from serve.evaluate.summary import aggregate, figures, gate_means


def run(config: EvaluateConfig) -> int:
    """Label, score and report; ConfigError, before Ray starts, for bad prediction files or labeller."""
    if not config.predictions:
        raise ConfigError("predictions: give at least one --predictions file (from socialalign predict)")
    tables = [load_predictions(Path(path)) for path in config.predictions]
    try:
        labeler_factory(config.labeler)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    labeler_options(config)
    judged = config.labeler == "llm-judge"
    with key_for_local_workers(config.judge, judged) as inline_key, ray_session(config.ray) as ray_info:
        if inline_key and not ray_info.started_here:
            refuse_inline_key("judge.api_key", "labelling workers")
        report = evaluate(config, pa.concat_tables(tables))
    print(f"evaluation of {', '.join(report['methods'])}: report at {report['report']}")
    return 0


def evaluate(config: EvaluateConfig, predictions: pa.Table) -> dict[str, Any]:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    labeler = {"spec": config.labeler, "options": labeler_options(config)}
    texts = predictions.drop_columns(["gates"])  # the labellers and metrics read texts only
    real_labels, reported_name = label_real_posts(texts, labeler)
    scored = map_rows(texts, Scorer, {**labeler, "real_labels": real_labels})
    table = pa.Table.from_pylist(scored, schema=SCORED)
    atomic_write_parquet(table, out / "scored.parquet")
    labeler_name = _labeler_name(config, reported_name)
    summary, macro = aggregate(table.to_pylist(), labeler_name)
    atomic_write_parquet(pa.Table.from_pylist(summary, schema=EVALUATION_SUMMARY), out / "summary.parquet")
    atomic_write_parquet(pa.Table.from_pylist(macro, schema=MACRO), out / "macro.parquet")
    gates = _gate_means(predictions, table)
    from serve.evaluate.report import write_report

    report = write_report(out, summary, macro, labeler_name, gates)
    success = {"labeler": labeler_name, "report": report.name,
               "methods": {row["method"]: figures(row) for row in summary}}
    write_success(out, "evaluate", {**success, "gates": gates} if gates else success)
    return {"methods": [row["method"] for row in summary], "report": str(report)}


def _gate_means(predictions: pa.Table, scored: pa.Table) -> list[dict[str, Any]]:
    """Mean expert gates by method and predicted sentiment, when some predictions carry gates."""
    if predictions["gates"].null_count == predictions.num_rows:
        return []
    keys = ["method", "topic", "user_id", "mid", "sample"]
    with_gates = predictions.filter(pc.invert(pc.is_null(predictions["gates"])))
    return gate_means(with_gates.select([*keys, "gates"]).to_pylist(),
                      scored.select([*keys, "predicted_label"]).to_pylist())


def labeler_options(config: EvaluateConfig) -> dict[str, Any]:
    """Keyword arguments of the labeller: the `judge` endpoint for llm-judge, none for the others."""
    if config.labeler != "llm-judge":
        return {}
    if not config.judge.base_url or not config.judge.model:
        raise ConfigError("labeler=llm-judge needs judge.base_url and judge.model (any OpenAI-compatible endpoint)")
    return {"endpoint": without_key(config.judge)}  # each labelling worker reads the key from its environment


def _labeler_name(config: EvaluateConfig, reported: str) -> str:
    return f"{reported} ({config.judge.model})" if config.labeler == "llm-judge" else reported

