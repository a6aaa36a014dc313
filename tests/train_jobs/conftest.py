"""Fixtures for the train stage: a tiny Qwen2 (and a briefly pretrained copy), a learnable SFT set,
DeepSpeed's CPU op built once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cluster.stage_config import RayConfig
from pac_lora import SYSTEM_PROMPT, build_tiny_checkpoint, pretrain_tiny_lm
from train_jobs.config import TrainConfig
from train_jobs.job import DEFAULT_EXTENSIONS_DIR
from train_jobs.synthetic import (
    synthetic_corpus,
    synthetic_sft_rows,
    write_synthetic_sft,
)

TOO_LONG_ID = "too-long|u0|x|full"


@pytest.fixture(scope="session")
def train_env() -> None:
    """Faster Ray Train polling (it hands over one report per poll) and DeepSpeed's op compiled once."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(DEFAULT_EXTENSIONS_DIR))
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    ShareMemCommBuilder().load()  # ~30 s the first time on a machine, then cached in .cache/


@pytest.fixture(scope="session")
def sft_rows() -> list[dict]:
    rows = synthetic_sft_rows()
    too_long = dict(next(row for row in rows if row["split"] == "train" and row["variant"] == "full"))
    too_long.update(id=TOO_LONG_ID, user_part="很长很长的历史博文。" * 300)
    return [*rows, too_long]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, sft_rows: list[dict]) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("train") / "qwen2", texts=synthetic_corpus(sft_rows[:-1]))


@pytest.fixture(scope="session")
def base_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sft_rows: list[dict]) -> Path:
    """The tiny model pretrained for a few seconds on the training prompts without their answers.

    A random tiny model's frozen, tied embeddings cap how far its logits can move (|logit| <~ 1.3 at
    hidden 64), so adapters on the projections alone could not show learning; after this they can,
    and the training tests use the default target modules (q, k, v, o, gate, up, down; no lm_head).
    The answers are left for the adapters to learn (each user's phrasing is in their history posts).
    """
    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("train") / "qwen2-pretrained"
    shutil.copytree(tiny_model, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["instruction"]}],
            tokenize=False, add_generation_prompt=True,
        )
        for row in sft_rows[:-1] if row["split"] == "train"
    ]
    first, last = pretrain_tiny_lm(directory, prompts, steps=100, batch_size=8, seq_len=128, learning_rate=1e-2)
    assert last < 0.5 * first, (first, last)
    return directory


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory: pytest.TempPathFactory, sft_rows: list[dict]) -> Path:
    return write_synthetic_sft(tmp_path_factory.mktemp("train") / "sft", sft_rows)


def train_config(model: Path, sft: Path, output: Path, **overrides: object) -> TrainConfig:
    """2 CPU workers, 2 rows per micro-batch, 2 micro-batches per step: 8 rows a step, 5 steps an epoch."""
    values: dict = {
        "base_model": str(model),
        "sft_path": sft,
        "output_dir": output,
        "num_workers": 2,
        "micro_batch_size": 2,
        "effective_batch_size": 8,
        "epochs": 4,
        "learning_rate": 1e-2,
        "max_length": 512,
        "checkpoint_every_steps": 5,
        "log_every_steps": 5,
        "ray": RayConfig(num_cpus=4, include_dashboard=False, object_store_memory_mb=512),
    }
    values.update(overrides)
    return TrainConfig(**values)
