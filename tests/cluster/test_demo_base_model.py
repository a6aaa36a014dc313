"""The demo's and the quality bench's base model reads the same texts in the same order from the same
dataset, however Ray Data happened to split and name its part files."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.demo.base_model import _texts
from cluster.schemas import CLEAN_HISTORY, SFT

START = datetime(2026, 1, 1, tzinfo=UTC)


def history_rows() -> list[dict]:
    return [{"user_id": f"u{user}", "mid": f"{user}{n:03d}", "text": f"用户{user}的第{n}条", "retweet_text": None,
             "created_at": START + timedelta(days=n)} for user in range(4) for n in range(5)]


def sft_rows() -> list[dict]:
    text = {name: "" for name in ("news", "input", "user_part", "news_part", "instruction_part")}
    return [{**text, "id": f"{user}-{topic}-{variant}", "split": "train", "variant": variant, "topic": topic,
             "user_id": f"u{user}", "mid": f"m{user}{topic}", "instruction": f"提示 {user} {topic} {variant}",
             "output": f"回答 {user} {topic}"}
            for user in range(3) for topic in ("甲", "乙") for variant in ("full", "without_history")]


def write_parts(directory: Path, rows: list[dict], schema: pa.Schema, order: random.Random) -> None:
    """The rows shuffled into three part files with random names, as a Ray Data write leaves them."""
    rows = rows[:]
    order.shuffle(rows)
    for part in range(3):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{order.getrandbits(64):016x}_{part:06d}-0.parquet"
        pq.write_table(pa.Table.from_pylist(rows[part::3], schema=schema), directory / name)


def dataset(out: Path, seed: int) -> Path:
    order = random.Random(seed)
    write_parts(out / "dataset" / "clean" / "history", history_rows(), CLEAN_HISTORY, order)
    write_parts(out / "dataset" / "sft" / "train", sft_rows(), SFT, order)
    return out


def test_the_texts_do_not_depend_on_how_the_parts_were_written(tmp_path: Path) -> None:
    first = _texts(dataset(tmp_path / "a", seed=1))
    second = _texts(dataset(tmp_path / "b", seed=2))
    assert first == second
    posts, prompts = first
    assert len(posts) == 20 + 12 and len(prompts) == 12


def test_each_users_history_stays_together_in_time_order(tmp_path: Path) -> None:
    posts, prompts = _texts(dataset(tmp_path, seed=3))
    assert posts[:20] == [row["text"] for row in history_rows()]
    assert prompts[:4] == ["提示 0 乙 full", "提示 0 乙 without_history", "提示 0 甲 full", "提示 0 甲 without_history"]
