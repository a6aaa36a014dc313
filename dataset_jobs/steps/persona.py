"""persona: through the configured OpenAI-compatible endpoint (`persona.base_url`), else built offline.
`persona_per: user` (ours): one persona per user who has a case, from that user's `persona_posts`
most recent posts. `persona_per: case` (the research's): one per case, from the posts retrieved for it.

With an endpoint, `persona_workers` Ray actors share the endpoint's rate cap; each reuses the
answers of the persona cache (`dataset_jobs.persona_cache`) and asks for the rest concurrently.
The endpoint's key never travels in an actor's arguments: each worker reads it from its own
environment (SOCIALALIGN_LLM_API_KEY, else OPENAI_API_KEY) and registers it for redaction.
Writes `personas/` (PERSONAS); the report counts personas by source and the tokens paid for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.llm import LLMEndpointConfig, api_key, without_key
from cluster.parquet import read_table_dir, replace_dir
from cluster.schemas import CASES, CLEAN_HISTORY, PERSONAS, RETRIEVAL
from dataset_jobs.config import DatasetConfig
from dataset_jobs.persona import (
    OFFLINE_MODEL,
    AnswerForm,
    PersonaClient,
    Wording,
    cache_key,
    offline_persona,
    persona_prompt,
    personas_for,
    shown_post,
)
from dataset_jobs.persona_cache import PersonaCache, compact_journals
from dataset_jobs.steps.ray_tables import partitions, read_dataset, shared, write_dataset
from dataset_jobs.steps.retrieve import history_order

log = logging.getLogger(__name__)

OUTPUT = "personas"
CACHE = "persona_cache"


def inputs(config: DatasetConfig, crawl_dir: Path, out: Path) -> list[Path]:
    return [out / "clean", out / "retrieval"] if config.persona_per == "case" else [out / "clean"]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {"persona_posts": config.persona_posts, "base_url": config.persona.base_url, "model": config.persona.model,
            "persona_per": config.persona_per, "persona_request": config.persona_request,
            "persona_answer": config.persona_answer}


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    endpoint = config.persona
    names = {row["user_id"]: row["user_name"] for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    if config.persona_per == "case":
        picked: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in read_table_dir(out / "retrieval", RETRIEVAL).select(["topic", "user_id", "mid", "history_mids"]) \
                .to_pylist():
            picked[row["user_id"]].append(row)
        make_input, options = case_inputs, {"cases": ray.put(dict(picked))}
    else:
        make_input, options = persona_input, {"posts": config.persona_posts}
    wanted = (
        read_dataset(out / "clean" / "history", CLEAN_HISTORY)
        .groupby("user_id", num_partitions=partitions())
        .map_groups(make_input, batch_format="pyarrow",
                    fn_kwargs={"names": names, "wording": config.persona_request, **options})
    )
    if endpoint.base_url:
        personas = _through_endpoint(wanted, config, out / CACHE)
    else:
        log.info("persona: no endpoint configured (persona.base_url): building personas offline from users' posts")
        personas = wanted.map_batches(offline_batch, batch_format="pyarrow",
                                      fn_kwargs={"wording": config.persona_request, "answer": config.persona_answer})
    replace_dir(out / OUTPUT, lambda directory: write_dataset(personas, directory, PERSONAS))
    table = read_table_dir(out / OUTPUT, PERSONAS)
    sources = Counter(table["source"].to_pylist())
    return {
        "personas": table.num_rows,
        "per": config.persona_per,
        "users": len(set(table["user_id"].to_pylist())),
        "by_source": dict(sources),
        "failed": sources.get("offline-fallback", 0),
        "prompt_tokens": pc.sum(table["prompt_tokens"]).as_py() or 0,
        "completion_tokens": pc.sum(table["completion_tokens"]).as_py() or 0,
        "endpoint": endpoint.base_url or "offline",
    }


def worker_arguments(config: DatasetConfig, cache_dir: Path) -> dict[str, Any]:
    """What each persona actor is constructed with: the endpoint without its key (a worker reads the
    key from its own environment), whether a key is expected there, and plain settings."""
    return {
        "endpoint": without_key(config.persona),
        "key_expected": api_key(config.persona) is not None,
        "rate_share": 1 / config.persona_workers,
        "cache_dir": str(cache_dir),
        "wording": config.persona_request,
        "answer": config.persona_answer,
        "log_level": config.log_level,
    }


def _through_endpoint(wanted: Any, config: DatasetConfig, cache_dir: Path) -> Any:
    from ray.data import ActorPoolStrategy

    cache_dir.mkdir(parents=True, exist_ok=True)
    compact_journals(cache_dir)  # before any worker starts a journal of its own
    return wanted.map_batches(
        PersonaWorker, batch_format="pyarrow", batch_size=config.persona.concurrency * 16,
        compute=ActorPoolStrategy(size=config.persona_workers), num_cpus=0.25,
        fn_constructor_kwargs=worker_arguments(config, cache_dir),
    )


PERSONA_INPUT = pa.schema([("user_id", pa.string()), ("user_name", pa.string()), ("posts", pa.list_(pa.string())),
                           ("topic", pa.string()), ("mid", pa.string())])


def persona_input(group: pa.Table, names: dict[str, str], posts: int, wording: str) -> pa.Table:
    """One user's most recent posts, if the user has a case (persona_per: user)."""
    rows = group.to_pylist()
    if not rows or rows[0]["user_id"] not in names:
        return PERSONA_INPUT.empty_table()
    recent = sorted(rows, key=lambda row: (row["created_at"] is not None, row["created_at"]), reverse=True)[:posts]
    texts = [shown_post(row["text"], row["retweet_text"], wording) for row in recent]
    return pa.Table.from_pylist(
        [{"user_id": rows[0]["user_id"], "user_name": names[rows[0]["user_id"]] or "", "posts": texts}],
        schema=PERSONA_INPUT,
    )


def case_inputs(group: pa.Table, names: dict[str, str], cases: Any, wording: str) -> pa.Table:
    """Each of one user's cases with the posts retrieved for it, best first (persona_per: case)."""
    rows = history_order(group.to_pylist())
    mine = shared(cases).get(rows[0]["user_id"], []) if rows else []
    by_mid = {row["mid"]: row for row in rows}
    out = []
    for case in mine:
        posts = [shown_post(by_mid[mid]["text"], by_mid[mid]["retweet_text"], wording)
                 for mid in case["history_mids"] if mid in by_mid]
        out.append({"user_id": case["user_id"], "user_name": names.get(case["user_id"]) or "", "posts": posts,
                    "topic": case["topic"], "mid": case["mid"]})
    return pa.Table.from_pylist(out, schema=PERSONA_INPUT)


def offline_batch(batch: pa.Table, wording: str, answer: str) -> pa.Table:
    rows = []
    for user in batch.to_pylist():
        rows.append({
            "user_id": user["user_id"], "user_name": user["user_name"], "topic": user["topic"], "mid": user["mid"],
            "persona": offline_persona(user["user_name"], user["posts"]), "source": "offline", "model": OFFLINE_MODEL,
            "key": cache_key(OFFLINE_MODEL, persona_prompt(user["user_name"], user["posts"], wording), wording, answer),
            "prompt_tokens": 0, "completion_tokens": 0, "attempts": 0, "error": None,
        })
    return pa.Table.from_pylist(rows, schema=PERSONAS)


class PersonaWorker:
    """A Ray Data actor: cached personas are reused, the rest asked concurrently; every answer is
    journaled as it arrives and the batch's answers become a cache part when it is done."""

    def __init__(self, endpoint: LLMEndpointConfig, key_expected: bool, rate_share: float, cache_dir: str,
                 wording: Wording = "ours", answer: AnswerForm = "trimmed", log_level: str = "INFO") -> None:
        from cluster.logs import register_secret, register_secrets_from_env, setup_logging

        setup_logging(log_level)  # from here on every record of this process is redacted when it is made
        register_secrets_from_env()
        key = api_key(endpoint)  # the endpoint came without its key: this reads this worker's environment
        register_secret(key)
        if key_expected and key is None:
            import socket

            raise RuntimeError(
                f"persona worker on {socket.gethostname()}: the job has an API key for {endpoint.base_url} but this "
                "Ray worker's environment has none: set SOCIALALIGN_LLM_API_KEY (or OPENAI_API_KEY) on every Ray "
                "node (k8s: the socialalign-secrets Secret in the worker pods too)"
            )
        self.endpoint, self.rate_share = endpoint, rate_share
        self.wording, self.answer = wording, answer
        self.model = str(endpoint.model)
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: the client's connections stay open
        self.client: PersonaClient | None = None
        self.cache = PersonaCache(Path(cache_dir))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, todo = [], {}
        same: dict[str, list[dict[str, Any]]] = defaultdict(list)  # requests asked once for several rows
        for user in batch.to_pylist():
            key = cache_key(self.model, persona_prompt(user["user_name"], user["posts"], self.wording), self.wording,
                            self.answer)
            hit = self.cache.get(key)
            if hit is None and key not in todo:
                todo[key] = user
            elif hit is None:
                same[key].append(user)
            else:
                rows.append(self._reused(user, key, hit["persona"]))
        if todo:
            results = self.loop.run_until_complete(self._ask(list(todo.values())))
            self.cache.seal(results)
            for key, user, result in zip(todo, todo.values(), results, strict=True):
                rows.append({**asdict(result), "user_name": user["user_name"]})
                rows += [self._reused(other, key, result.persona) for other in same[key] if result.source == "llm"]
                rows += [{**asdict(result), "user_name": other["user_name"], "user_id": other["user_id"],
                          "topic": other["topic"], "mid": other["mid"]}
                         for other in same[key] if result.source != "llm"]
        return pa.Table.from_pylist(rows, schema=PERSONAS)

    def _reused(self, user: dict[str, Any], key: str, persona: str) -> dict[str, Any]:
        return {"user_id": user["user_id"], "user_name": user["user_name"], "persona": persona, "source": "cache",
                "model": self.model, "key": key, "prompt_tokens": 0, "completion_tokens": 0, "attempts": 0,
                "error": None, "topic": user["topic"], "mid": user["mid"]}

    async def _ask(self, users: list[dict[str, Any]]) -> list[Any]:
        if self.client is None:
            self.client = PersonaClient(self.endpoint, self.rate_share, wording=self.wording, answer=self.answer)
        return await personas_for(self.client, users, on_result=self.cache.journal_answer)
