"""Stage 3: Ray Train + DeepSpeed fine-tuning of PAC-LoRA and the LoRA baseline (issue #6).

    from train_jobs import train
    summary = train(load_config(TrainConfig, "train.yaml"))   # summary.adapter_dir, .steps, .tokens_per_s

Modules: `job` (the driver: `run`, `train`), `data` (the SFT set through Ray Data), `plan` (steps,
DeepSpeed config, LR schedule), `loop` (what each worker runs), `model` (PAC-LoRA or peft LoRA,
adapter export), `checkpoint`, `synthetic` (a small learnable SFT set). Imports are lazy so that
`python -m train_jobs --help` never loads torch or Ray.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run": "train_jobs.job",
    "train": "train_jobs.job",
    "describe": "train_jobs.job",
    "TrainSummary": "train_jobs.job",
    "verify_adapter": "train_jobs.model",
    "adapter_weights_from_zero": "train_jobs.checkpoint",
    "synthetic_sft_rows": "train_jobs.synthetic",
    "write_synthetic_sft": "train_jobs.synthetic",
    "synthetic_corpus": "train_jobs.synthetic",
}

__all__ = [
    "TrainSummary",
    "adapter_weights_from_zero",
    "describe",
    "run",
    "synthetic_corpus",
    "synthetic_sft_rows",
    "train",
    "verify_adapter",
    "write_synthetic_sft",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train_jobs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
