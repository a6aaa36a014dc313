"""sft: every case in every prompt variant (full, without_persona, without_history), with the prompt
parts PAC-LoRA routes on, split into train and test by topic (never by row).

Writes `sft/train` and `sft/test` (SFT) and alpaca records `sft/<split>-<variant>.jsonl`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.expressions import col

from cluster.config import ConfigError
from cluster.parquet import read_table_dir, replace_dir
from cluster.schemas import CASES, PERSONAS, RETRIEVAL, SFT
from dataset_jobs.config import DatasetConfig
from dataset_jobs.steps.ray_tables import read_dataset, shared, write_dataset
from pac_lora import research_prompt_parts

OUTPUT = "sft"


def inputs(config: DatasetConfig, crawl_dir: Path, out: Path) -> list[Path]:
    return [out / "clean", out / "retrieval", out / "personas"]


def settings(config: DatasetConfig) -> dict[str, Any]:
    return {"variants": config.variants, "test_fraction": config.test_fraction, "test_topics": config.test_topics,
            "seed": config.seed, "persona_per": config.persona_per}


def build(config: DatasetConfig, crawl_dir: Path, out: Path) -> dict[str, Any]:
    import ray

    cases = {(row["topic"], row["mid"]): row for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    personas = {persona_key(row, config.persona_per): row["persona"]
                for row in read_table_dir(out / "personas", PERSONAS).to_pylist()}
    splits = _splits(config, sorted({topic for topic, _ in cases}))
    rows = read_dataset(out / "retrieval", RETRIEVAL).map_batches(
        sft_batch, batch_format="pyarrow",
        fn_kwargs={"cases": ray.put(cases), "personas": ray.put(personas), "splits": splits,
                   "variants": tuple(config.variants), "per": config.persona_per},
    ).materialize()

    def fill(directory: Path) -> None:
        for split in ("train", "test"):
            write_dataset(rows.filter(expr=col("split") == split), directory / split, SFT)
            table = read_table_dir(directory / split, SFT)
            for variant in config.variants:
                _write_jsonl(table.filter(pc.equal(table["variant"], variant)), directory / f"{split}-{variant}.jsonl")

    replace_dir(out / OUTPUT, fill)
    return {
        "train_rows": read_table_dir(out / OUTPUT / "train", SFT).num_rows,
        "test_rows": read_table_dir(out / OUTPUT / "test", SFT).num_rows,
        "train_topics": sorted(t for t, s in splits.items() if s == "train"),
        "test_topics": sorted(t for t, s in splits.items() if s == "test"),
        "variants": list(config.variants),
    }


def _splits(config: DatasetConfig, topics: list[str]) -> dict[str, str]:
    if config.test_topics is None:
        return split_topics(topics, config.test_fraction, config.seed)
    unknown = sorted(set(config.test_topics) - set(topics))
    if unknown:
        raise ConfigError(f"test_topics: {unknown} are not among the dataset's topics {topics}")
    return {topic: "test" if topic in config.test_topics else "train" for topic in topics}


def split_topics(topics: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Train/test by topic, never by row, so no topic is in both; the same seed, the same split."""
    order = list(topics)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction) if len(order) > 1 else 0
    n_test = min(max(n_test, 1 if test_fraction > 0 and len(order) > 1 else 0), len(order) - 1) if order else 0
    return {topic: ("test" if i < n_test else "train") for i, topic in enumerate(order)}


def persona_key(row: dict[str, Any], per: str) -> Any:
    """What a persona belongs to: its user (persona_per: user) or its case (persona_per: case)."""
    return (row["topic"], row["mid"]) if per == "case" else row["user_id"]


def sft_batch(
    batch: pa.Table, cases: Any, personas: Any, splits: dict[str, str], variants: tuple[str, ...], per: str = "user"
) -> pa.Table:
    """The SFT rows of a batch of retrieval rows: one per case and variant."""
    cases, personas = shared(cases), shared(personas)
    rows = []
    for picked in batch.to_pylist():
        case = cases.get((picked["topic"], picked["mid"]))
        if case is None:
            continue
        persona = personas.get(persona_key(case, per))
        for variant in variants:
            parts = research_prompt_parts(case["user_name"] or "", picked["history_texts"], persona, case["news"],
                                          case["topic"], variant)
            rows.append({
                "id": f"{case['topic']}|{case['user_id']}|{case['mid']}|{variant}", "split": splits[case["topic"]],
                "variant": variant, "topic": case["topic"], "news": case["news"], "news_source": case["news_source"],
                "user_id": case["user_id"], "user_name": case["user_name"], "mid": case["mid"],
                "instruction": parts.instruction, "input": "", "output": case["output"], "user_part": parts.user_part,
                "news_part": parts.news_part, "instruction_part": parts.instruction_part, "persona": persona,
                "history_mids": picked["history_mids"], "history_texts": picked["history_texts"],
            })
    return pa.Table.from_pylist(rows, schema=SFT)


def _write_jsonl(table: pa.Table, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        for row in table.select(["instruction", "input", "output"]).to_pylist():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temp.replace(path)
