"""persona: one persona per user who has a case, from that user's `persona_posts` most recent posts;
through the configured OpenAI-compatible endpoint (`persona.base_url`), else built offline.

With an endpoint, `persona_workers` Ray actors share the endpoint's rate cap; each reuses the
answers of the persona cache (`dataset_jobs.persona_cache`) and asks for the rest concurrently.
Writes `personas/` (PERSONAS); the report counts personas by source and the tokens paid for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.llm import LLMEndpointConfig
from cluster.parquet import read_table_dir, replace_dir
from cluster.schemas import CASES, CLEAN_HISTORY, PERSONAS
from dataset_jobs.config import DatasetConfig
from dataset_jobs.persona import OFFLINE_MODEL, PersonaClient, cache_key, offline_persona, persona_prompt, personas_for
from dataset_jobs.persona_cache import PersonaCache, compact_journals
from dataset_jobs.steps.ray_tables import partitions, read_dataset, write_dataset
from pac_lora import format_history_post

log = logging.getLogger(__name__)

OUTPUT = "personas"
CACHE = "persona_cache"


def inputs(crawl_dir: Path, out: Path) -> list[Path]:
    return [out / "clean"]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {"persona_posts": config.persona_posts, "base_url": config.persona.base_url, "model": config.persona.model}


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    endpoint = config.persona
    wanted = {row["user_id"]: row["user_name"] for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    users = (
        read_dataset(out / "clean" / "history", CLEAN_HISTORY)
        .groupby("user_id", num_partitions=partitions())
        .map_groups(persona_input, batch_format="pyarrow", fn_kwargs={"names": wanted, "posts": config.persona_posts})
    )
    if endpoint.base_url:
        personas = _through_endpoint(users, config, out / CACHE)
    else:
        log.info("persona: no endpoint configured (persona.base_url): building personas offline from users' posts")
        personas = users.map_batches(offline_batch, batch_format="pyarrow")
    replace_dir(out / OUTPUT, lambda directory: write_dataset(personas, directory, PERSONAS))
    table = read_table_dir(out / OUTPUT, PERSONAS)
    sources = Counter(table["source"].to_pylist())
    return {
        "users": table.num_rows,
        "by_source": dict(sources),
        "failed": sources.get("offline-fallback", 0),
        "prompt_tokens": pc.sum(table["prompt_tokens"]).as_py() or 0,
        "completion_tokens": pc.sum(table["completion_tokens"]).as_py() or 0,
        "endpoint": endpoint.base_url or "offline",
    }


def _through_endpoint(users: Any, config: DatasetConfig, cache_dir: Path) -> Any:
    from ray.data import ActorPoolStrategy

    cache_dir.mkdir(parents=True, exist_ok=True)
    compact_journals(cache_dir)  # before any worker starts a journal of its own
    return users.map_batches(
        PersonaWorker, batch_format="pyarrow", batch_size=config.persona.concurrency * 16,
        compute=ActorPoolStrategy(size=config.persona_workers), num_cpus=0.25,
        fn_constructor_kwargs={"endpoint": config.persona, "rate_share": 1 / config.persona_workers,
                               "cache_dir": str(cache_dir)},
    )


PERSONA_INPUT = pa.schema([("user_id", pa.string()), ("user_name", pa.string()), ("posts", pa.list_(pa.string()))])


def persona_input(group: pa.Table, names: dict[str, str], posts: int) -> pa.Table:
    """One user's most recent posts, if the user has a case."""
    rows = group.to_pylist()
    if not rows or rows[0]["user_id"] not in names:
        return PERSONA_INPUT.empty_table()
    recent = sorted(rows, key=lambda row: (row["created_at"] is not None, row["created_at"]), reverse=True)[:posts]
    texts = [format_history_post(row["text"], row["retweet_text"]) for row in recent]
    return pa.Table.from_pylist(
        [{"user_id": rows[0]["user_id"], "user_name": names[rows[0]["user_id"]] or "", "posts": texts}],
        schema=PERSONA_INPUT,
    )


def offline_batch(batch: pa.Table) -> pa.Table:
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
    """A Ray Data actor: cached personas are reused, the rest asked concurrently; every answer is
    journaled as it arrives and the batch's answers become a cache part when it is done."""

    def __init__(self, endpoint: LLMEndpointConfig, rate_share: float, cache_dir: str) -> None:
        self.endpoint, self.rate_share = endpoint, rate_share
        self.model = str(endpoint.model)
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: the client's connections stay open
        self.client: PersonaClient | None = None
        self.cache = PersonaCache(Path(cache_dir))

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, todo = [], []
        for user in batch.to_pylist():
            key = cache_key(self.model, persona_prompt(user["user_name"], user["posts"]))
            hit = self.cache.get(key)
            if hit is None:
                todo.append(user)
                continue
            rows.append({"user_id": user["user_id"], "user_name": user["user_name"], "persona": hit["persona"],
                         "source": "cache", "model": self.model, "key": key, "prompt_tokens": 0,
                         "completion_tokens": 0, "attempts": 0, "error": None})
        if todo:
            results = self.loop.run_until_complete(self._ask(todo))
            self.cache.seal(results)
            names = {user["user_id"]: user["user_name"] for user in todo}
            rows += [{**asdict(result), "user_name": names[result.user_id]} for result in results]
        return pa.Table.from_pylist(rows, schema=PERSONAS)

    async def _ask(self, users: list[dict[str, Any]]) -> list[Any]:
        if self.client is None:
            self.client = PersonaClient(self.endpoint, self.rate_share)
        return await personas_for(self.client, users, on_result=self.cache.journal_answer)
