"""retrieve: for every case, the `top_k` history posts of its user most relevant to its news (BM25,
`dataset_jobs.retrieval`), never the target post itself and, by default, only posts written before it.

Writes `retrieval/` (RETRIEVAL): one row per case, the picked posts best first with their scores.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.parquet import read_table_dir, replace_dir
from cluster.schemas import CASES, CLEAN_HISTORY, RETRIEVAL
from dataset_jobs.config import DatasetConfig
from dataset_jobs.retrieval import BM25Retriever, repost_document
from dataset_jobs.steps.ray_tables import partitions, read_dataset, shared, write_dataset
from pac_lora import format_history_post

OUTPUT = "retrieval"


def inputs(config: DatasetConfig, crawl_dir: Path, out: Path) -> list[Path]:
    return [out / "clean"]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {"top_k": config.top_k, "bm25_k1": config.bm25_k1, "bm25_b": config.bm25_b,
            "history_before_post": config.history_before_post}


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in read_table_dir(out / "clean" / "cases", CASES).to_pylist():
        by_user[case["user_id"]].append(case)
    picked = (
        read_dataset(out / "clean" / "history", CLEAN_HISTORY)
        .groupby("user_id", num_partitions=partitions())
        .map_groups(
            retrieve_user, batch_format="pyarrow",
            fn_kwargs={"cases": ray.put(dict(by_user)), "k": config.top_k, "k1": config.bm25_k1, "b": config.bm25_b,
                       "before_post": config.history_before_post},
        )
    )
    replace_dir(out / OUTPUT, lambda directory: write_dataset(picked, directory, RETRIEVAL))
    written = read_table_dir(out / OUTPUT, RETRIEVAL)
    lengths = pc.list_value_length(written["history_mids"])
    short = pc.sum(pc.less(lengths, config.top_k).cast(pa.int64())).as_py()
    counts = sorted(pc.value_counts(lengths).to_pylist() if written.num_rows else [], key=lambda c: c["values"])
    return {"cases": written.num_rows, "cases_with_fewer_than_k": short or 0,
            "cases_by_history_length": {str(c["values"]): c["counts"] for c in counts}}


def history_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest first, as the timeline lists them: ties and zero-score fill-ins must not depend on
    the order the shuffle delivered the group in."""
    return sorted(rows, key=lambda row: (row["created_at"] is not None, row["created_at"] or 0, row["mid"]),
                  reverse=True)


def retrieve_user(group: pa.Table, cases: Any, k: int, k1: float, b: float, before_post: bool) -> pa.Table:
    """One user's history against each of that user's cases."""
    cases = shared(cases)
    history = history_order(group.to_pylist())
    mine = cases.get(history[0]["user_id"], []) if history else []
    if not mine:
        return RETRIEVAL.empty_table()
    index = BM25Retriever(k1, b).index([repost_document(row["text"], row["retweet_text"]) for row in history])
    position = {row["mid"]: i for i, row in enumerate(history)}
    rows = []
    for case in mine:
        # The case's own post, when it is still in the history (exclude_targets: own), is left out of
        # the index too: the scores are those of the history without it, as the research computes them.
        own = position.get(case["mid"])
        posts = history if own is None else history[:own] + history[own + 1:]
        scorer = index if own is None else index.without(own)
        allowed = np.array([_allowed(row, case, before_post) for row in posts], dtype=bool)
        scores = scorer.scores_for(case["news"])
        ranked = scorer.top_k(np.where(allowed, scores, -np.inf), k, allowed)
        rows.append({
            "topic": case["topic"], "user_id": case["user_id"], "mid": case["mid"],
            "history_mids": [posts[i]["mid"] for i, _ in ranked],
            "history_texts": [format_history_post(posts[i]["text"], posts[i]["retweet_text"]) for i, _ in ranked],
            "scores": [score for _, score in ranked],
        })
    return pa.Table.from_pylist(rows, schema=RETRIEVAL)


def _allowed(post: dict[str, Any], case: dict[str, Any], before_post: bool) -> bool:
    """Not written at or after the target post (before_post)."""
    later = before_post and case["created_at"] and post["created_at"] and post["created_at"] >= case["created_at"]
    return not later
