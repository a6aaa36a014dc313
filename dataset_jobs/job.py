"""`socialalign build-dataset`: crawl tables -> cleaned history, cases, retrieval, personas, SFT set.

Each step (`dataset_jobs.steps`) is a Ray Data job reading Parquet and writing Parquet under
`output_dir/<step>/`, swapped in whole when it finishes. A step whose inputs and settings are
unchanged since its last success (`<step>/_SUCCESS.json`) is skipped; the persona step also
resumes row by row through its content-hash cache, so an interrupted run never pays for a persona twice.

The persona endpoint's key reaches the Ray workers through their environment, never through task or
actor arguments: a key in the environment (SOCIALALIGN_LLM_API_KEY or OPENAI_API_KEY) is already
there; a key given in the config itself is put in this process's environment before it starts its
local Ray, whose workers inherit it, and is refused with a ConfigError when the job joins a running
Ray cluster (its workers could not see it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster.config import ConfigError
from cluster.llm import key_for_local_workers, refuse_inline_key
from cluster.ray_connect import ray_session
from cluster.reports import SUCCESS, read_success, write_success
from dataset_jobs.config import DatasetConfig
from dataset_jobs.news import load_news_file
from dataset_jobs.steps import clean, persona, retrieve, sft

log = logging.getLogger(__name__)

STAGE = "build-dataset"
STEPS: dict[str, ModuleType] = {"clean": clean, "retrieve": retrieve, "persona": persona, "sft": sft}
CRAWL_TABLES = ("posts", "history", "users")

__all__ = ["SUCCESS", "STEPS", "run"]


def run(config: DatasetConfig) -> int:
    """The stage entry point: run the requested steps in order; 0 when they all finished."""
    crawl_dir, out = config.crawl_dir.resolve(), config.output_dir.resolve()
    _check(config, crawl_dir)
    in_use = "persona" in config.steps
    with key_for_local_workers(config.persona, in_use) as inline_key, ray_session(config.ray) as ray_info:
        if inline_key and not ray_info.started_here:
            refuse_inline_key("persona.api_key", "persona workers")
        for name, step in STEPS.items():
            if name in config.steps:
                _run_step(name, step, config, crawl_dir, out)
    print(f"dataset ready in {out}: sft/train, sft/test (Parquet) and sft/*.jsonl (alpaca)")
    return 0


def _check(config: DatasetConfig, crawl_dir: Path) -> None:
    """Config problems that show before any work: the crawl tables, the persona endpoint."""
    missing = [name for name in CRAWL_TABLES if not (crawl_dir / name).is_dir()]
    if missing:
        raise ConfigError(f"crawl_dir: {crawl_dir} lacks the crawl tables {missing} (run socialalign crawl first)")
    if "persona" in config.steps and config.persona.base_url and not config.persona.model:
        raise ConfigError("persona.model: name the model the endpoint serves (persona.base_url is set)")
    if config.news_file is not None and "clean" in config.steps:
        load_news_file(config.news_file)  # a bad topics file is an error before any work


def _run_step(name: str, step: ModuleType, config: DatasetConfig, crawl_dir: Path, out: Path) -> None:
    target = out / step.OUTPUT
    fingerprint = _fingerprint(step.inputs(config, crawl_dir, out), step.settings(config))
    if not config.force and _up_to_date(target, fingerprint):
        log.info("%s: up to date, skipped (force=true reruns it)", name)
        return
    began = time.monotonic()
    report = step.build(config, crawl_dir, out)
    report["seconds"] = round(time.monotonic() - began, 2)
    write_success(target, STAGE, report, step=name, fingerprint=fingerprint)
    log.info("%s: done in %.1fs %s", name, report["seconds"], json.dumps(report, ensure_ascii=False))


def _fingerprint(inputs: list[Path], settings: dict[str, Any]) -> str:
    """The settings and every input file's name, size and modification time, hashed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for root in inputs:
        for path in [root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []:
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                digest.update(f"{path.relative_to(root.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _up_to_date(target: Path, fingerprint: str) -> bool:
    """Same inputs and settings as the last success, and nothing in it fell short (a persona whose
    retries ran out is asked again on the next run; the cache answers for everyone else)."""
    last = read_success(target)
    if last is None:
        return False
    if last.get("report", {}).get("failed"):
        log.info("%s: %d rows fell short last time: running it again", target.name, last["report"]["failed"])
        return False
    return last.get("fingerprint") == fingerprint
