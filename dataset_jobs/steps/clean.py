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
from dataset_jobs.cleaning import RULES, Rules, clean_text, exclusions_for, is_hashtags_only, judge_post
from dataset_jobs.config import DatasetConfig
from dataset_jobs.news import given_news
from dataset_jobs.steps.ray_tables import partitions, read_dataset, shared, write_dataset

log = logging.getLogger(__name__)

OUTPUT = "clean"


def inputs(config: DatasetConfig, crawl_dir: Path, out: Path) -> list[Path]:
    given = [config.news_file] if config.news_file is not None else []
    return [crawl_dir / "history", crawl_dir / "posts", crawl_dir / "users", crawl_dir / "topics", *given]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in (
        "min_history_posts", "exclusion_words", "exclude_own_name", "text_patterns", "exclusions", "require_own_text",
        "require_topics", "short_topic_chars", "exclude_targets", "news", "news_file")}


def rules_of(config: DatasetConfig) -> Rules:
    return Rules(
        patterns=config.text_patterns, exclusions=exclusions_for(config.exclusions, config.exclusion_words),
        exclude_own_name=config.exclude_own_name, require_own_text=config.require_own_text,
        require_topics=config.require_topics, short_topic_chars=config.short_topic_chars,
        exclude_all_targets=config.exclude_targets == "all",
    )


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    rules = rules_of(config)
    users = read_table_dir(crawl_dir / "users", USERS).select(["user_id", "screen_name"]).to_pylist()
    names = {row["user_id"]: row["screen_name"] for row in users}
    posts = read_table_dir(crawl_dir / "posts", POSTS)
    targets: dict[str, set[str]] = defaultdict(set)
    for uid, mid in zip(posts["user_id"].to_pylist(), posts["mid"].to_pylist(), strict=True):
        targets[uid].add(mid)
    targets_ref = ray.put(dict(targets))
    judged = (
        read_dataset(crawl_dir / "history", HISTORY)
        .map_batches(
            judge_batch, batch_format="pyarrow",
            fn_kwargs={"names": ray.put(names if config.exclude_own_name else {}), "targets": targets_ref,
                       "rules": rules},
        )
        .groupby("user_id", num_partitions=partitions())
        .map_groups(enforce_min_posts, batch_format="pyarrow", fn_kwargs={"min_posts": config.min_history_posts})
        .materialize()
    )
    dropped: Counter = Counter()
    for row in judged.map_batches(_rule_counts, batch_format="pyarrow").take_all():
        dropped[row["dropped_by"]] += row["rows"]
    kept = judged.filter(expr=col("dropped_by").is_null()).drop_columns(["dropped_by"]).materialize()
    usable = {}
    if kept.count():
        summaries = kept.groupby("user_id", num_partitions=partitions()).map_groups(
            user_summary, batch_format="pyarrow", fn_kwargs={"targets": targets_ref})
        usable = {row["user_id"]: (row["kept"], set(row["kept_targets"])) for row in summaries.take_all()}
    cases, case_report = _cases(config, crawl_dir, posts, names, usable)

    def fill(directory: Path) -> None:
        write_dataset(kept, directory / "history", CLEAN_HISTORY)
        (directory / "cases").mkdir()
        atomic_write_parquet(cases, directory / "cases" / "part-000.parquet")

    replace_dir(out / OUTPUT, fill)
    return {
        "history_rows_in": sum(dropped.values()),
        "history_rows_kept": dropped.get(None, 0),
        "dropped_by_rule": {rule: dropped.get(rule, 0) for rule in (*RULES, "malformed")},
        "users_kept": len(usable),
        **case_report,
    }


def _rule_counts(batch: pa.Table) -> pa.Table:
    counts = pc.value_counts(batch["dropped_by"])
    return pa.table({"dropped_by": counts.field("values"), "rows": counts.field("counts")})


JUDGED = pa.schema([*(CLEAN_HISTORY.field(n).with_nullable(True) for n in CLEAN_HISTORY.names),
                    pa.field("dropped_by", pa.string())])


def judge_batch(batch: pa.Table, names: Any, targets: Any, rules: Rules) -> pa.Table:
    """Each post with the first rule that drops it (`dropped_by`), or None when it is kept."""
    names, targets = shared(names), shared(targets)
    rows = batch.select(["user_id", "mid", "text", "retweet_text", "created_at", "topics"]).to_pylist()
    out = []
    for row in rows:
        topics = row.pop("topics")
        if not row["user_id"] or not row["mid"] or row["text"] is None:
            out.append({**row, "text": row["text"] or "", "dropped_by": "malformed"})
            continue
        verdict = judge_post(row["text"], row["retweet_text"], row["mid"], names.get(row["user_id"]), rules,
                             frozenset(targets.get(row["user_id"], ())), topics)
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


USER_SUMMARY = pa.schema([("user_id", pa.string()), ("kept", pa.int64()), ("kept_targets", pa.list_(pa.string()))])


def user_summary(group: pa.Table, targets: Any) -> pa.Table:
    """One user's kept posts: how many, and which of them are target posts (kept when exclude_targets is own)."""
    targets = shared(targets)
    user = group["user_id"][0].as_py()
    mine = targets.get(user, set())
    return pa.Table.from_pylist([{"user_id": user, "kept": group.num_rows,
                                  "kept_targets": [mid for mid in group["mid"].to_pylist() if mid in mine]}],
                                schema=USER_SUMMARY)


def _cases(config: DatasetConfig, crawl_dir: Path, posts: pa.Table, names: dict[str, str],
           usable: dict[str, tuple[int, set[str]]]) -> tuple[pa.Table, dict]:
    given = given_news(config.news, config.news_file)
    crawled = {row["topic"]: row for row in read_table_dir(crawl_dir / "topics", TOPICS).to_pylist() if row["news"]}
    counts: Counter = Counter()
    sources: Counter = Counter()
    cases = []
    for post in posts.select(["query", "user_id", "mid", "text", "created_at"]).to_pylist():
        output = clean_text(post["text"], config.text_patterns)
        kept, kept_targets = usable.get(post["user_id"], (0, set()))
        if post["user_id"] not in usable:
            counts["cases_dropped_user"] += 1
        elif kept - (post["mid"] in kept_targets) < config.min_history_posts:
            counts["cases_dropped_too_few_posts"] += 1  # only when each case's own post leaves its history
        elif not output or is_hashtags_only(output):
            counts["cases_dropped_empty_output"] += 1
        else:
            news, source = _news(post["query"], given, crawled)
            sources[source] += 1
            cases.append({"topic": post["query"], "news": news, "news_source": source, "user_id": post["user_id"],
                          "user_name": names.get(post["user_id"]), "mid": post["mid"], "output": output,
                          "created_at": post["created_at"]})
    if sources["hashtag"]:
        log.warning("%d cases have no news text (no news/news_file entry and no AI-search summary): their hashtag "
                    "stands in for it", sources["hashtag"])
    unused = sorted(set(given) - set(posts["query"].to_pylist()))
    if unused:
        log.warning("news given for topics the crawl has no posts of: %s", unused)
    return pa.Table.from_pylist(cases, schema=CASES), {
        "cases": len(cases), **counts, "cases_by_news_source": dict(sources),
        "cases_without_news_text": sources["hashtag"], "news_topics_unused": unused,
    }


def _news(topic: str, given: dict[str, str], crawled: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """A topic's news and where it came from: the user (config), the crawl (its source), or the hashtag."""
    if topic in given:
        return given[topic], "config"
    if topic in crawled:
        return crawled[topic]["news"], "config" if crawled[topic]["source"] == "config" else "ai_search"
    return f"#{topic}#", "hashtag"
