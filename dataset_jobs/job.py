"""`socialalign build-dataset`: crawl tables -> cleaned history, cases, retrieval, personas, SFT set.

Each step is a Ray Data job reading Parquet and writing Parquet under `output_dir/<step>/`, swapped
in whole when it finishes. A step whose inputs and settings are unchanged since its last success
(`<step>/_SUCCESS.json`) is skipped; the persona step also resumes row by row through its
content-hash cache, so an interrupted run never pays for a persona twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.expressions import col

from cluster.parquet import atomic_write_parquet, read_parts, read_table_dir, replace_dir
from cluster.ray_connect import ray_session
from cluster.schemas import CASES, CLEAN_HISTORY, HISTORY, PERSONA_CACHE, PERSONAS, POSTS, RETRIEVAL, SFT, TOPICS, USERS
from dataset_jobs.config import DatasetConfig
from dataset_jobs.cleaning import DEFAULT_EXCLUSIONS, RULES, clean_text, is_hashtags_only, judge_post
from dataset_jobs.persona import OFFLINE_MODEL, PersonaClient, cache_key, offline_persona, persona_prompt, personas_for
from dataset_jobs.retrieval import BM25Retriever, repost_document
from pac_lora.prompt import format_history_post, research_prompt_parts

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS.json"


def run(config: DatasetConfig) -> int:
    """The stage entry point: run the requested steps in order; 0 when they all finished."""
    crawl_dir, out = config.crawl_dir.resolve(), config.output_dir.resolve()
    missing = [name for name in ("posts", "history", "users") if not (crawl_dir / name).is_dir()]
    if missing:
        print(f"socialalign build-dataset: {crawl_dir} lacks the crawl tables {missing} (run socialalign crawl first)")
        return 2
    with ray_session(config.ray):
        for step in ("clean", "retrieve", "persona", "sft"):
            if step in config.steps:
                _run_step(step, config, crawl_dir, out)
    print(f"dataset ready in {out}: sft/train, sft/test (Parquet) and sft/*.jsonl (alpaca)")
    return 0


def _run_step(step: str, config: DatasetConfig, crawl_dir: Path, out: Path) -> None:
    inputs = {
        "clean": [crawl_dir / "history", crawl_dir / "posts", crawl_dir / "users", crawl_dir / "topics"],
        "retrieve": [out / "clean"],
        "persona": [out / "clean"],
        "sft": [out / "clean", out / "retrieval", out / "personas"],
    }[step]
    target = out / {"clean": "clean", "retrieve": "retrieval", "persona": "personas", "sft": "sft"}[step]
    fingerprint = _fingerprint(inputs, _settings_of(step, config))
    if not config.force and _up_to_date(target, fingerprint):
        log.info("%s: up to date, skipped (force=true reruns it)", step)
        return
    began = time.monotonic()
    report = _STEPS[step](config, crawl_dir, out)
    report["seconds"] = round(time.monotonic() - began, 2)
    (target / SUCCESS).write_text(json.dumps({"fingerprint": fingerprint, "report": report}, ensure_ascii=False, indent=2))
    log.info("%s: done in %.1fs %s", step, report["seconds"], json.dumps(report, ensure_ascii=False))


# --- clean -------------------------------------------------------------------------------------


def _clean(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    users = read_table_dir(crawl_dir / "users", USERS).select(["user_id", "screen_name"]).to_pylist()
    names = {row["user_id"]: row["screen_name"] for row in users}
    posts = read_table_dir(crawl_dir / "posts", POSTS)
    targets: dict[str, set[str]] = defaultdict(set)
    for uid, mid in zip(posts["user_id"].to_pylist(), posts["mid"].to_pylist()):
        targets[uid].add(mid)
    exclusions = tuple(config.exclusion_words if config.exclusion_words is not None else DEFAULT_EXCLUSIONS)
    judged = (
        _read(crawl_dir / "history", HISTORY)
        .map_batches(
            _judge_batch, batch_format="pyarrow",
            fn_kwargs={"names": ray.put(names if config.exclude_own_name else {}), "targets": ray.put(dict(targets)),
                       "exclusions": exclusions},
        )
        .groupby("user_id", num_partitions=_partitions())
        .map_groups(_enforce_min_posts, batch_format="pyarrow", fn_kwargs={"min_posts": config.min_history_posts})
        .materialize()
    )
    dropped: Counter = Counter()
    for row in judged.map_batches(_rule_counts, batch_format="pyarrow").take_all():
        dropped[row["dropped_by"]] += row["rows"]
    kept = judged.filter(expr=col("dropped_by").is_null()).drop_columns(["dropped_by"]).materialize()
    kept_users = set(kept.unique("user_id")) if kept.count() else set()
    cases, case_report = _cases(crawl_dir, posts, names, kept_users)

    def fill(directory: Path) -> None:
        _write(kept, directory / "history", CLEAN_HISTORY)
        (directory / "cases").mkdir()
        atomic_write_parquet(cases, directory / "cases" / "part-000.parquet")

    replace_dir(out / "clean", fill)
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


def _judge_batch(batch: pa.Table, names: Any, targets: Any, exclusions: tuple[str, ...]) -> pa.Table:
    import ray

    names = ray.get(names) if isinstance(names, ray.ObjectRef) else names
    targets = ray.get(targets) if isinstance(targets, ray.ObjectRef) else targets
    rows = batch.select(["user_id", "mid", "text", "retweet_text", "created_at"]).to_pylist()
    out = []
    for row in rows:
        if not row["user_id"] or not row["mid"] or row["text"] is None:
            out.append({**row, "text": row["text"] or "", "dropped_by": "malformed"})
            continue
        verdict = judge_post(row["text"], row["retweet_text"], row["mid"], names.get(row["user_id"]), exclusions,
                             frozenset(targets.get(row["user_id"], ())))
        out.append({**row, "text": verdict.text, "retweet_text": verdict.retweet_text, "dropped_by": verdict.dropped_by})
    return pa.Table.from_pylist(out, schema=_JUDGED)


_JUDGED = pa.schema([*(CLEAN_HISTORY.field(n).with_nullable(True) for n in CLEAN_HISTORY.names),
                     pa.field("dropped_by", pa.string())])


def _enforce_min_posts(group: pa.Table, min_posts: int) -> pa.Table:
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


# --- retrieve ----------------------------------------------------------------------------------


def _retrieve(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    cases = read_table_dir(out / "clean" / "cases", CASES).to_pylist()
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        by_user[case["user_id"]].append(case)
    picked = (
        _read(out / "clean" / "history", CLEAN_HISTORY)
        .groupby("user_id", num_partitions=_partitions())
        .map_groups(
            _retrieve_user, batch_format="pyarrow",
            fn_kwargs={"cases": ray.put(dict(by_user)), "k": config.top_k, "k1": config.bm25_k1, "b": config.bm25_b,
                       "before_post": config.history_before_post},
        )
    )
    replace_dir(out / "retrieval", lambda directory: _write(picked, directory, RETRIEVAL))
    written = read_table_dir(out / "retrieval", RETRIEVAL)
    short = pc.sum(pc.less(pc.list_value_length(written["history_mids"]), config.top_k).cast(pa.int64())).as_py()
    return {"cases": written.num_rows, "cases_with_fewer_than_k": short or 0}


def _retrieve_user(group: pa.Table, cases: Any, k: int, k1: float, b: float, before_post: bool) -> pa.Table:
    import numpy as np
    import ray

    cases = ray.get(cases) if isinstance(cases, ray.ObjectRef) else cases
    # Newest first, as the timeline lists them: ties and zero-score fill-ins must not depend on
    # the order the shuffle delivered the group in.
    history = sorted(group.to_pylist(), key=lambda row: (row["created_at"] is not None, row["created_at"] or 0,
                                                         row["mid"]), reverse=True)
    mine = cases.get(history[0]["user_id"], []) if history else []
    if not mine:
        return RETRIEVAL.empty_table()
    documents = [repost_document(row["text"], row["retweet_text"]) for row in history]
    index = BM25Retriever(k1, b).index(documents)
    rows = []
    for case in mine:
        scores = index.scores_for(case["news"])
        allowed = np.array([
            row["mid"] != case["mid"] and not (before_post and case["created_at"] and row["created_at"]
                                               and row["created_at"] >= case["created_at"])
            for row in history
        ])
        ranked = index.top_k(np.where(allowed, scores, -np.inf), k, allowed)
        rows.append({
            "topic": case["topic"], "user_id": case["user_id"], "mid": case["mid"],
            "history_mids": [history[i]["mid"] for i, _ in ranked],
            "history_texts": [format_history_post(history[i]["text"], history[i]["retweet_text"]) for i, _ in ranked],
            "scores": [score for _, score in ranked],
        })
    return pa.Table.from_pylist(rows, schema=RETRIEVAL)


# --- persona -----------------------------------------------------------------------------------


def _persona(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    from ray.data import ActorPoolStrategy

    endpoint = config.persona
    wanted = {row["user_id"]: row["user_name"] for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    inputs = (
        _read(out / "clean" / "history", CLEAN_HISTORY)
        .groupby("user_id", num_partitions=_partitions())
        .map_groups(_persona_input, batch_format="pyarrow", fn_kwargs={"names": wanted, "posts": config.persona_posts})
    )
    if endpoint.base_url:
        if not endpoint.model:
            raise ValueError("persona.model: name the model the endpoint serves")
        cache_dir = out / "persona_cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        compact_journals(cache_dir)  # before any worker starts a journal of its own
        rate = endpoint.requests_per_second / config.persona_workers if endpoint.requests_per_second else None
        personas = inputs.map_batches(
            PersonaWorker, batch_format="pyarrow", batch_size=endpoint.concurrency * 16,
            compute=ActorPoolStrategy(size=config.persona_workers), num_cpus=0.25,
            fn_constructor_kwargs={
                "base_url": endpoint.base_url, "model": endpoint.model,
                "api_key": endpoint.api_key.get_secret_value() if endpoint.api_key else None,
                "concurrency": endpoint.concurrency, "requests_per_second": rate, "timeout_s": endpoint.timeout_s,
                "max_retries": endpoint.max_retries, "cache_dir": str(cache_dir),
            },
        )
    else:
        log.info("persona: no endpoint configured (persona.base_url): building personas offline from users' posts")
        personas = inputs.map_batches(_offline_batch, batch_format="pyarrow")
    replace_dir(out / "personas", lambda directory: _write(personas, directory, PERSONAS))
    table = read_table_dir(out / "personas", PERSONAS)
    sources = Counter(table["source"].to_pylist())
    return {
        "users": table.num_rows,
        "by_source": dict(sources),
        "failed": sources.get("offline-fallback", 0),
        "prompt_tokens": pc.sum(table["prompt_tokens"]).as_py() or 0,
        "completion_tokens": pc.sum(table["completion_tokens"]).as_py() or 0,
        "endpoint": endpoint.base_url or "offline",
    }


def _persona_input(group: pa.Table, names: dict[str, str], posts: int) -> pa.Table:
    rows = group.to_pylist()
    if not rows or rows[0]["user_id"] not in names:
        return _PERSONA_INPUT.empty_table()
    recent = sorted(rows, key=lambda row: (row["created_at"] is not None, row["created_at"]), reverse=True)[:posts]
    texts = [format_history_post(row["text"], row["retweet_text"]) for row in recent]
    return pa.Table.from_pylist(
        [{"user_id": rows[0]["user_id"], "user_name": names[rows[0]["user_id"]] or "", "posts": texts}],
        schema=_PERSONA_INPUT,
    )


_PERSONA_INPUT = pa.schema([("user_id", pa.string()), ("user_name", pa.string()), ("posts", pa.list_(pa.string()))])


def _offline_batch(batch: pa.Table) -> pa.Table:
    rows = []
    for user in batch.to_pylist():
        rows.append({
            "user_id": user["user_id"], "user_name": user["user_name"],
            "persona": offline_persona(user["user_name"], user["posts"]), "source": "offline", "model": OFFLINE_MODEL,
            "key": cache_key(OFFLINE_MODEL, persona_prompt(user["user_name"], user["posts"])),
            "prompt_tokens": 0, "completion_tokens": 0, "attempts": 0, "error": None,
        })
    return pa.Table.from_pylist(rows, schema=PERSONAS)


class PersonaWorker:
    """A Ray Data actor: cached personas are reused, the rest asked concurrently. Each answer is
    appended to this worker's journal the moment it arrives, so a killed run keeps every answer it
    was given; at the end of a batch the journal becomes a Parquet part of the cache."""

    def __init__(self, cache_dir: str, **client_kwargs: Any) -> None:
        self.cache_dir = Path(cache_dir)
        self.loop = asyncio.new_event_loop()
        self.client_kwargs = client_kwargs
        self.client: PersonaClient | None = None
        self.cache = {row["key"]: row for row in read_persona_cache(self.cache_dir)}
        self.journal_path = self.cache_dir / f"{JOURNAL_PREFIX}{secrets.token_hex(8)}.jsonl"
        self.journal = None

    def __call__(self, batch: pa.Table) -> pa.Table:
        users = batch.to_pylist()
        model = self.client_kwargs["model"]
        rows, todo = [], []
        for user in users:
            key = cache_key(model, persona_prompt(user["user_name"], user["posts"]))
            hit = self.cache.get(key)
            if hit is not None:
                rows.append({"user_id": user["user_id"], "user_name": user["user_name"], "persona": hit["persona"],
                             "source": "cache", "model": model, "key": key, "prompt_tokens": 0, "completion_tokens": 0,
                             "attempts": 0, "error": None})
            else:
                todo.append(user)
        if todo:
            results = self.loop.run_until_complete(self._ask(todo))
            self._compact([r for r in results if r.source == "llm"])
            names = {u["user_id"]: u["user_name"] for u in todo}
            rows += [{**asdict(r), "user_name": names[r.user_id]} for r in results]
        return pa.Table.from_pylist(rows, schema=PERSONAS)

    async def _ask(self, users: list[dict[str, Any]]) -> list[Any]:
        if self.client is None:
            self.client = PersonaClient(**self.client_kwargs)
        return await personas_for(self.client, users, on_result=self._journal)

    def _journal(self, result: Any) -> None:
        if result.source != "llm":
            return
        if self.journal is None:
            self.journal = self.journal_path.open("a", encoding="utf-8")
        self.journal.write(json.dumps(_cache_row(result), ensure_ascii=False) + "\n")
        self.journal.flush()  # in the kernel's hands now: survives this process being killed

    def _compact(self, results: list[Any]) -> None:
        if not results:
            return
        rows = [_cache_row(r) for r in results]
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=PERSONA_CACHE),
                             self.cache_dir / f"part-{secrets.token_hex(8)}.parquet")
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        self.journal_path.unlink(missing_ok=True)
        self.cache.update({row["key"]: row for row in rows})


JOURNAL_PREFIX = "journal-"


def _cache_row(result: Any) -> dict[str, Any]:
    return {"key": result.key, "persona": result.persona, "model": result.model,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}


def read_persona_cache(cache_dir: Path) -> list[dict[str, Any]]:
    """Every cached answer: the Parquet parts, then the journals of runs that did not finish."""
    return read_parts(cache_dir, PERSONA_CACHE, []).to_pylist() + _journal_rows(cache_dir)


def _journal_rows(cache_dir: Path) -> list[dict[str, Any]]:
    """The answers in the journals; a line cut short by a kill is skipped."""
    rows = []
    for journal in sorted(cache_dir.glob(f"{JOURNAL_PREFIX}*.jsonl")):
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows.append({name: row[name] for name in PERSONA_CACHE.names})
            except (ValueError, KeyError, TypeError):
                log.warning("persona cache: skipped a damaged line in %s", journal.name)
    return rows


def compact_journals(cache_dir: Path) -> int:
    """Fold the journals left by interrupted runs into one Parquet part; the rows it kept."""
    journals = sorted(cache_dir.glob(f"{JOURNAL_PREFIX}*.jsonl"))
    if not journals:
        return 0
    known = set(read_parts(cache_dir, PERSONA_CACHE, [])["key"].to_pylist())
    rows = list({row["key"]: row for row in _journal_rows(cache_dir) if row["key"] not in known}.values())
    if rows:
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=PERSONA_CACHE),
                             cache_dir / f"part-{secrets.token_hex(8)}.parquet")
    for journal in journals:
        journal.unlink()
    log.info("persona cache: kept %d answers an interrupted run had paid for", len(rows))
    return len(rows)


# --- sft ---------------------------------------------------------------------------------------


def _sft(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    cases = {(row["topic"], row["mid"]): row for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    personas = {row["user_id"]: row["persona"] for row in read_table_dir(out / "personas", PERSONAS).to_pylist()}
    topics = sorted({topic for topic, _ in cases})
    if config.test_topics is not None:
        unknown = sorted(set(config.test_topics) - set(topics))
        if unknown:
            raise ValueError(f"test_topics: {unknown} are not among the dataset's topics {topics}")
        splits = {topic: "test" if topic in config.test_topics else "train" for topic in topics}
    else:
        splits = split_topics(topics, config.test_fraction, config.seed)
    rows = _read(out / "retrieval", RETRIEVAL).map_batches(
        _sft_batch, batch_format="pyarrow",
        fn_kwargs={"cases": ray.put(cases), "personas": ray.put(personas), "splits": splits,
                   "variants": tuple(config.variants)},
    ).materialize()

    def fill(directory: Path) -> None:
        for split in ("train", "test"):
            _write(rows.filter(expr=col("split") == split), directory / split, SFT)
            table = read_table_dir(directory / split, SFT)
            for variant in config.variants:
                _write_jsonl(table.filter(pc.equal(table["variant"], variant)), directory / f"{split}-{variant}.jsonl")

    replace_dir(out / "sft", fill)
    table = read_table_dir(out / "sft" / "train", SFT)
    test = read_table_dir(out / "sft" / "test", SFT)
    return {
        "train_rows": table.num_rows, "test_rows": test.num_rows,
        "train_topics": sorted(t for t, s in splits.items() if s == "train"),
        "test_topics": sorted(t for t, s in splits.items() if s == "test"),
        "variants": list(config.variants),
    }


def split_topics(topics: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Train/test by topic, never by row, so no topic is in both; the same seed, the same split."""
    order = list(topics)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction) if len(order) > 1 else 0
    n_test = min(max(n_test, 1 if test_fraction > 0 and len(order) > 1 else 0), len(order) - 1) if order else 0
    return {topic: ("test" if i < n_test else "train") for i, topic in enumerate(order)}


def _sft_batch(batch: pa.Table, cases: Any, personas: Any, splits: dict[str, str], variants: tuple[str, ...]) -> pa.Table:
    import ray

    cases = ray.get(cases) if isinstance(cases, ray.ObjectRef) else cases
    personas = ray.get(personas) if isinstance(personas, ray.ObjectRef) else personas
    rows = []
    for picked in batch.to_pylist():
        case = cases.get((picked["topic"], picked["mid"]))
        if case is None:
            continue
        for variant in variants:
            parts = research_prompt_parts(case["user_name"] or "", picked["history_texts"],
                                          personas.get(case["user_id"]), case["news"], case["topic"], variant)
            rows.append({
                "id": f"{case['topic']}|{case['user_id']}|{case['mid']}|{variant}", "split": splits[case["topic"]],
                "variant": variant, "topic": case["topic"], "news": case["news"], "user_id": case["user_id"],
                "user_name": case["user_name"], "mid": case["mid"], "instruction": parts.instruction, "input": "",
                "output": case["output"], "user_part": parts.user_part, "news_part": parts.news_part,
                "instruction_part": parts.instruction_part, "persona": personas.get(case["user_id"]),
                "history_mids": picked["history_mids"], "history_texts": picked["history_texts"],
            })
    return pa.Table.from_pylist(rows, schema=SFT)


def _write_jsonl(table: pa.Table, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        for row in table.select(["instruction", "input", "output"]).to_pylist():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temp.replace(path)


# --- plumbing ----------------------------------------------------------------------------------


def _read(directory: Path, schema: pa.Schema) -> Any:
    """A Ray Dataset over the readable Parquet files of `directory`; unreadable ones are named and left out."""
    import ray

    files, bad = [], []
    for path in sorted(directory.rglob("*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            pq.read_metadata(path)
            files.append(str(path))
        except (pa.ArrowInvalid, OSError) as error:
            bad.append(f"{path}: {error}")
    for problem in bad:
        log.error("left out an unreadable input file: %s", problem)
    if not files:
        return ray.data.from_arrow(schema.empty_table())
    return ray.data.read_parquet(files, schema=schema)


def _write(dataset: Any, directory: Path, schema: pa.Schema) -> None:
    """Write in parallel from the workers, every block in the declared schema (into a fresh directory
    that `replace_dir` swaps in)."""
    dataset.map_batches(_conform, batch_format="pyarrow", fn_kwargs={"schema": schema}).write_parquet(str(directory))
    directory.mkdir(parents=True, exist_ok=True)


def _conform(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    return batch.select(schema.names).cast(schema)


def _partitions() -> int:
    """Shuffle partitions: enough for every CPU, few enough that small data is not scattered thin."""
    import ray

    return max(1, min(16, int(ray.cluster_resources().get("CPU", 1))))


def _fingerprint(inputs: list[Path], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for root in inputs:
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                digest.update(f"{path.relative_to(root.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _up_to_date(target: Path, fingerprint: str) -> bool:
    """Same inputs and settings as the last success, and nothing in it fell short (a persona whose
    retries ran out is asked again on the next run; the cache answers for everyone else)."""
    try:
        last = json.loads((target / SUCCESS).read_text())
    except (OSError, ValueError):
        return False
    if last.get("report", {}).get("failed"):
        log.info("%s: %d rows fell short last time: running it again", target.name, last["report"]["failed"])
        return False
    return last.get("fingerprint") == fingerprint


def _settings_of(step: str, config: DatasetConfig) -> dict[str, Any]:
    fields = {
        "clean": ["min_history_posts", "exclusion_words", "exclude_own_name"],
        "retrieve": ["top_k", "bm25_k1", "bm25_b", "history_before_post"],
        "persona": ["persona_posts"],
        "sft": ["variants", "test_fraction", "test_topics", "seed"],
    }[step]
    settings = {name: getattr(config, name) for name in fields}
    if step == "persona":
        settings.update(base_url=config.persona.base_url, model=config.persona.model)
    return settings


_STEPS: dict[str, Callable[[DatasetConfig, Path, Path], dict[str, Any]]] = {
    "clean": _clean,
    "retrieve": _retrieve,
    "persona": _persona,
    "sft": _sft,
}
