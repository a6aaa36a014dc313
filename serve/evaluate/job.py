"""`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.

Two Ray Data passes: the first labels each real post once (by mid, however many samples and
methods predict it), the second labels every predicted post and scores the micro metrics per row.
Then the driver aggregates: micro averages per method, and per method and topic the predicted
sentiment distribution against the real one (macro metrics, averaged over the topics that have
both). Writes `scored.parquet`, `summary.parquet`, `macro.parquet`, `report.md` and its PNG plots,
then `_SUCCESS.json` with each method's summary figures. Predictions that carry expert gates
(`predict return_gates=true`) add their mean gates by predicted sentiment, plotted and in the report.

With `truth` (a simulator run: `truth.py`) real posts count as their true sentiment, the labeller
is scored against it, and each method gets spearman_stance and a stance plot; with `dataset`
(build-dataset's output) the method history-baseline is scored beside the predictions
(`history.py`); with methods named zero-shot and oracle, each method's gap closed between them.

The labeller is chosen as serve chooses it (`serve.make_labeler`): offline, llm-judge
(options from `judge`), placeholder-unlabelled, or "package.module:factory".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.config import ConfigError
from cluster.llm import key_for_local_workers, refuse_inline_key, without_key
from cluster.parquet import atomic_write_parquet
from cluster.ray_connect import ray_session
from cluster.reports import read_success, write_success
from cluster.schemas import EVALUATION_SUMMARY, MACRO, SCORED
from serve import UNLABELLED, labeler_factory
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.history import HISTORY_BASELINE, baseline, history_posts, load_history, retrieval_dir
from serve.evaluate.labelling import RealLabels, Scorer, label_real_posts, map_rows
from serve.evaluate.predictions import load_predictions
from serve.evaluate.runs import combine_runs
from serve.evaluate.summary import aggregate, figures, gate_means
from serve.evaluate.truth import (
    POST_SHARES,
    Truth,
    check_coverage,
    labeller_vs_truth,
    load_truth,
    mentions,
    positive_shares,
    stance_correlation,
    stance_pairs,
    user_stances,
    wrong_hashtag,
)

REAL_POSTS = "(real posts)"  # the stance plot's reference: the real posts' own positive share


def run(config: EvaluateConfig) -> int:
    """Label, score and report; ConfigError, before Ray starts, for bad prediction files or labeller.
    With `runs` instead: put those evaluations side by side (`combine_runs`), no Ray."""
    if config.runs:
        return _combine(config)
    if not config.predictions:
        raise ConfigError("predictions: give at least one --predictions file (from socialalign predict)")
    tables = [load_predictions(Path(path)) for path in config.predictions]
    try:
        labeler_factory(config.labeler)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    labeler_options(config)
    predictions = pa.concat_tables(tables)
    truth = load_truth(config.truth) if config.truth else None
    if truth is not None:
        check_coverage(truth, predictions["mid"].to_pylist(), config.truth)
    if config.dataset is not None:
        retrieval_dir(config.dataset)
    judged = config.labeler == "llm-judge"
    with key_for_local_workers(config.judge, judged) as inline_key, ray_session(config.ray) as ray_info:
        if inline_key and not ray_info.started_here:
            refuse_inline_key("judge.api_key", "labelling workers")
        report = evaluate(config, predictions, truth)
    print(f"evaluation of {', '.join(report['methods'])}: report at {report['report']}")
    return 0


def evaluate(config: EvaluateConfig, predictions: pa.Table, truth: Truth | None = None) -> dict[str, Any]:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    labeler = {"spec": config.labeler, "options": labeler_options(config)}
    texts = predictions.drop_columns(["gates"])  # the labellers and metrics read texts only
    labelled, reported_name = label_real_posts(texts, labeler)
    real_labels = {mid: truth.sentiment[mid] for mid in labelled} if truth else labelled
    scored = map_rows(texts, Scorer, {**labeler, "real_labels": real_labels})
    extra: dict[str, Any] = {}
    pools, shares = {}, {}
    if config.dataset is not None:
        rows, extra["history_baseline"], pools, shares = _history_baseline(config, predictions, labeler, real_labels)
        scored += rows
    table = pa.Table.from_pylist(scored, schema=SCORED)
    atomic_write_parquet(table, out / "scored.parquet")
    labeler_name = _labeler_name(config, reported_name)
    rows = table.to_pylist()
    stance = _stance(rows, truth, shares, real_labels) if truth else {}
    if truth is not None:
        extra["truth"] = {"labeller_vs_truth": labeller_vs_truth(labelled, truth),
                          "real_spearman_stance": stance_correlation(stance.get(REAL_POSTS, []))}
    summary, macro = aggregate(rows, labeler_name, pools=pools, mentions=_mentions(predictions, truth),
                               spearman={m: stance_correlation(pairs) for m, pairs in stance.items()})
    atomic_write_parquet(pa.Table.from_pylist(summary, schema=EVALUATION_SUMMARY), out / "summary.parquet")
    atomic_write_parquet(pa.Table.from_pylist(macro, schema=MACRO), out / "macro.parquet")
    gates = _gate_means(predictions, table)
    from serve.evaluate.report import write_report

    report = write_report(out, summary, macro, labeler_name, gates, extra=extra, stance=stance)
    success = {"labeler": labeler_name, "report": report.name,
               "methods": {row["method"]: figures(row) for row in summary}, **extra}
    write_success(out, "evaluate", {**success, "gates": gates} if gates else success)
    return {"methods": [row["method"] for row in summary], "report": str(report)}


def _combine(config: EvaluateConfig) -> int:
    """`runs`: earlier evaluations side by side; each must have finished (its _SUCCESS.json)."""
    if config.predictions:
        raise ConfigError("give predictions (to evaluate) or runs (earlier evaluations to combine), not both")
    unfinished = [str(path) for path in config.runs if read_success(path) is None]
    if unfinished:
        raise ConfigError(f"runs: no finished evaluation (_SUCCESS.json) in {', '.join(unfinished)}")
    combined = combine_runs(list(config.runs), config.output_dir)
    write_success(config.output_dir, "evaluate", {"report": "seeds.md", "combined": combined})
    print(f"{combined['runs']} evaluations of {', '.join(combined['methods'])} side by side: "
          f"{config.output_dir / 'seeds.md'}")
    return 0


def _history_baseline(config: EvaluateConfig, predictions: pa.Table, labeler: dict[str, Any],
                      real_labels: dict[str, str]) -> tuple[list[dict], dict[str, Any], dict, dict]:
    """The history baseline's scored rows, its report, its pooled labels and positive shares."""
    keys = predictions.select(["topic", "user_id", "mid"]).to_pylist()
    cases = list(dict.fromkeys((row["topic"], row["user_id"], row["mid"]) for row in keys))
    history = load_history(config.dataset)
    posts = history_posts(cases, history)
    labels = {row["mid"]: row["real_label"] for row in map_rows(posts, RealLabels, labeler)} if posts.num_rows else {}
    result = baseline(cases, history, labels, real_labels)
    report = {"cases": len(cases), "history_posts": posts.num_rows, "cases_without_history": result["missing"],
              "history_unlabelled": sum(label == UNLABELLED for label in labels.values())}
    return result["rows"], report, {HISTORY_BASELINE: result["pools"]}, {HISTORY_BASELINE: result["shares"]}


def _stance(rows: list[dict[str, Any]], truth: Truth, shares: dict[str, dict], real_labels: dict[str, str]
            ) -> dict[str, list[tuple[float, float]]]:
    """Per method, and for the real posts: (true stance, positive share) per (topic, user)."""
    stances = user_stances(rows, truth)
    if not stances:
        return {}
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    pairs = {method: stance_pairs(shares.get(method) or positive_shares(items), stances)
             for method, items in sorted(by_method.items())}
    real = [{"topic": t, "user_id": u, "label": real_labels[m]}
            for t, u, m in dict.fromkeys((row["topic"], row["user_id"], row["mid"]) for row in rows)]
    pairs[REAL_POSTS] = stance_pairs(positive_shares(real, label="label"), stances)
    return pairs


def _mentions(predictions: pa.Table, truth: Truth | None) -> dict[str, dict[str, float]]:
    """Per method, the share of predicted posts that name the topic (or one of its terms, from the
    truth: topic_mention) and that carry only other topics' hashtags (wrong_hashtag)."""
    terms = truth.terms if truth else {}
    counts: dict[str, Counter] = defaultdict(Counter)
    for method, topic, text in zip(*(predictions[c].to_pylist() for c in ("method", "topic", "prediction")),
                                   strict=True):
        counts[method].update(topic_mention=mentions(text, topic, terms), wrong_hashtag=wrong_hashtag(text, topic),
                              posts=1)
    return {method: {name: count[name] / count["posts"] for name in POST_SHARES} for method, count in counts.items()}


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

