"""The persona cache (`<output_dir>/persona_cache/`): every answer an endpoint was paid for, by
content hash (model + prompt), so a rerun, or a run after a kill, never asks twice.

Parquet parts hold the answers of finished batches. While a batch is in flight each answer is also
appended to the worker's journal (`journal-<id>.jsonl`) the moment it arrives and flushed to the
kernel, so a killed run keeps every answer it was given; a finished batch becomes a Parquet part
and its journal goes. `compact_journals` folds the journals of interrupted runs into one part.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from cluster.parquet import atomic_write_parquet, read_parts
from cluster.schemas import PERSONA_CACHE
from dataset_jobs.persona import PersonaResult

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal-"


class PersonaCache:
    """One worker's view of the cache: what is known, plus its own journal of the batch in flight."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.answers = {row["key"]: row for row in read_persona_cache(directory)}
        self.journal_path = directory / f"{JOURNAL_PREFIX}{secrets.token_hex(8)}.jsonl"
        self.journal: IO[str] | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        return self.answers.get(key)

    def journal_answer(self, result: PersonaResult) -> None:
        """Keep an LLM answer the moment it arrives (anything else was not paid for)."""
        if result.source != "llm":
            return
        if self.journal is None:
            self.journal = self.journal_path.open("a", encoding="utf-8")
        self.journal.write(json.dumps(cache_row(result), ensure_ascii=False) + "\n")
        self.journal.flush()  # in the kernel's hands now: survives this process being killed

    def seal(self, results: list[PersonaResult]) -> None:
        """The batch is done: its LLM answers become a Parquet part and the journal goes."""
        rows = [cache_row(result) for result in results if result.source == "llm"]
        if not rows:
            return
        write_part(self.directory, rows)
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        self.journal_path.unlink(missing_ok=True)
        self.answers.update({row["key"]: row for row in rows})


def cache_row(result: PersonaResult) -> dict[str, Any]:
    return {"key": result.key, "persona": result.persona, "model": result.model,
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens}


def write_part(directory: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_parquet(pa.Table.from_pylist(rows, schema=PERSONA_CACHE),
                         directory / f"part-{secrets.token_hex(8)}.parquet")


def read_persona_cache(directory: Path) -> list[dict[str, Any]]:
    """Every cached answer: the Parquet parts, then the journals of runs that did not finish."""
    return read_parts(directory, PERSONA_CACHE, []).to_pylist() + _journal_rows(directory)


def _journal_rows(directory: Path) -> list[dict[str, Any]]:
    """The answers in the journals; a line cut short by a kill is skipped."""
    rows = []
    for journal in sorted(directory.glob(f"{JOURNAL_PREFIX}*.jsonl")):
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows.append({name: row[name] for name in PERSONA_CACHE.names})
            except (ValueError, KeyError, TypeError):
                log.warning("persona cache: skipped a damaged line in %s", journal.name)
    return rows


def compact_journals(directory: Path) -> int:
    """Fold the journals left by interrupted runs into one Parquet part; the rows it kept."""
    journals = sorted(directory.glob(f"{JOURNAL_PREFIX}*.jsonl"))
    if not journals:
        return 0
    known = set(read_parts(directory, PERSONA_CACHE, [])["key"].to_pylist())
    rows = list({row["key"]: row for row in _journal_rows(directory) if row["key"] not in known}.values())
    if rows:
        write_part(directory, rows)
    for journal in journals:
        journal.unlink()
    log.info("persona cache: kept %d answers an interrupted run had paid for", len(rows))
    return len(rows)
