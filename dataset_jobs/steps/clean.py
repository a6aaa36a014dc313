"""clean: the crawl's history judged post by post (`dataset_jobs.cleaning`'s rules), users with too
few usable posts dropped whole, and the target posts turned into cases (news, user, answer).

Writes `clean/history` (CLEAN_HISTORY) and `clean/cases` (CASES); the report counts every rule.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.expressions import col

from cluster.parquet import atomic_write_parquet, read_table_dir, replace_dir
from cluster.schemas import CASES, CLEAN_HISTORY, HISTORY, POSTS, TOPICS, USERS
from dataset_jobs.cleaning import DEFAULT_EXCLUSIONS, RULES, clean_text, is_hashtags_only, judge_post
from dataset_jobs.config import DatasetConfig
from dataset_jobs.steps.ray_tables import partitions, read_dataset, shared, write_dataset

log = logging.getLogger(__name__)

OUTPUT = "clean"


def inputs(crawl_dir: Path, out: Path) -> list[Path]:
    return [crawl_dir / "history", crawl_dir / "posts", crawl_dir / "users", crawl_dir / "topics"]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {"min_history_posts": config.min_history_posts, "exclusion_words": config.exclusion_words,
            "exclude_own_name": config.exclude_own_name}


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    users = read_table_dir(crawl_dir / "users", USERS).select(["user_id", "screen_name"]).to_pylist()
    names = {row["user_id"]: row["screen_name"] for row in users}
    posts = read_table_dir(crawl_dir / "posts", POSTS)
    targets: dict[str, set[str]] = defaultdict(set)
    for uid, mid in zip(posts["user_id"].to_pylist(), posts["mid"].to_pylist(), strict=True):
        targets[uid].add(mid)
    exclusions = tuple(config.exclusion_words if config.exclusion_words is not None else DEFAULT_EXCLUSIONS)
    judged = (
        read_dataset(crawl_dir / "history", HISTORY)
        .map_batches(
            judge_batch, batch_format="pyarrow",
            fn_kwargs={"names": ray.put(names if config.exclude_own_name else {}), "targets": ray.put(dict(targets)),
                       "exclusions": exclusions},
        )
        .groupby("user_id", num_partitions=partitions())
        .map_groups(enforce_min_posts, batch_format="pyarrow", fn_kwargs={"min_posts": config.min_history_posts})
        .materialize()
    )
    dropped: Counter = Counter()
    for row in judged.map_batches(_rule_counts, batch_format="pyarrow").take_all():
        dropped[row["dropped_by"]] += row["rows"]
    kept = judged.filter(expr=col("dropped_by").is_null()).drop_columns(["dropped_by"]).materialize()
    kept_users = set(kept.unique("user_id")) if kept.count() else set()
    cases, case_report = _cases(crawl_dir, posts, names, kept_users)

    def fill(directory: Path) -> None:
        write_dataset(kept, directory / "history", CLEAN_HISTORY)
        (directory / "cases").mkdir()
        atomic_write_parquet(cases, directory / "cases" / "part-000.parquet")

    replace_dir(out / OUTPUT, fill)
    return {
        "history_rows_in": sum(dropped.values()),
        "history_rows_kept": dropped.get(None, 0),
        "dropped_by_rule": {rule: dropped.get(rule, 0) for rule in (*RULES, "malformed")},
        "users_kept": len(kept_users),
        **case_report,
    }


def _rule_counts(batch: pa.Table) -> pa.Table:
    counts = pc.value_counts(batch["dropped_by"])
    return pa.table({"dropped_by": counts.field("values"), "rows": counts.field("counts")})


JUDGED = pa.schema([*(CLEAN_HISTORY.field(n).with_nullable(True) for n in CLEAN_HISTORY.names),
                    pa.field("dropped_by", pa.string())])


def judge_batch(batch: pa.Table, names: Any, targets: Any, exclusions: tuple[str, ...]) -> pa.Table:
    """Each post with the first rule that drops it (`dropped_by`), or None when it is kept."""
    names, targets = shared(names), shared(targets)
    rows = batch.select(["user_id", "mid", "text", "retweet_text", "created_at"]).to_pylist()
    out = []
    for row in rows:
        if not row["user_id"] or not row["mid"] or row["text"] is None:
            out.append({**row, "text": row["text"] or "", "dropped_by": "malformed"})
            continue
        verdict = judge_post(row["text"], row["retweet_text"], row["mid"], names.get(row["user_id"]), exclusions,
                             frozenset(targets.get(row["user_id"], ())))
        out.append({**row, "text": verdict.text, "retweet_text": verdict.retweet_text,
                    "dropped_by": verdict.dropped_by})
    return pa.Table.from_pylist(out, schema=JUDGED)


def enforce_min_posts(group: pa.Table, min_posts: int) -> pa.Table:
    """One user's judged posts: all of them dropped ("user_too_few_posts") when fewer than `min_posts` are kept."""
    kept = pc.sum(pc.is_null(group["dropped_by"]).cast(pa.int64())).as_py() or 0
    if kept >= min_posts:
        return group
    dropped = pc.if_else(pc.is_null(group["dropped_by"]), pa.scalar("user_too_few_posts"), group["dropped_by"])
    return group.set_column(group.schema.get_field_index("dropped_by"), "dropped_by", dropped)


def _cases(crawl_dir: Path, posts: pa.Table, names: dict[str, str], kept_users: set[str]) -> tuple[pa.Table, dict]:
    topics = read_table_dir(crawl_dir / "topics", TOPICS).to_pylist()
    news = {row["topic"]: row["news"] for row in topics if row["news"]}
    counts: Counter = Counter()
    cases = []
    for post in posts.select(["query", "user_id", "mid", "text", "created_at"]).to_pylist():
        output = clean_text(post["text"])
        if post["user_id"] not in kept_users:
            counts["cases_dropped_user"] += 1
        elif not output or is_hashtags_only(output):
            counts["cases_dropped_empty_output"] += 1
        else:
            if post["query"] not in news:
                counts["cases_without_news_text"] += 1
            cases.append({"topic": post["query"], "news": news.get(post["query"]) or f"#{post['query']}#",
                          "user_id": post["user_id"], "user_name": names.get(post["user_id"]), "mid": post["mid"],
                          "output": output, "created_at": post["created_at"]})
    if counts["cases_without_news_text"]:
        log.warning("%d cases have no news text (crawl without AI search?): their hashtag stands in for it",
                    counts["cases_without_news_text"])
    return pa.Table.from_pylist(cases, schema=CASES), {"cases": len(cases), **counts}
