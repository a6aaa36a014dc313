"""Stage 3: Ray Train + DeepSpeed fine-tuning of PAC-LoRA and the LoRA baseline.

    from train_jobs import train
    summary = train(load_config(TrainConfig, "train.yaml"))   # summary.adapter_dir, .steps, .tokens_per_s

Modules: `config` (TrainConfig), `job` (the driver: `run`, `train`), `data` (the SFT set through
Ray Data), `plan` (steps, DeepSpeed config, LR schedule), `trainer` (the Ray Train trainer),
`loop` (what each worker runs), `model` (PAC-LoRA or peft LoRA on the base model), `checkpoint`,
`summary` (what a run reports), `synthetic` (a small learnable SFT set). The adapter files
themselves are `pac_lora`'s. Imports are lazy so that `python -m train_jobs --help` never loads
torch or Ray.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run": "train_jobs.job",
    "train": "train_jobs.job",
    "describe": "train_jobs.summary",
    "TrainSummary": "train_jobs.summary",
    "adapter_weights_from_zero": "train_jobs.checkpoint",
    "synthetic_sft_rows": "train_jobs.synthetic",
    "write_synthetic_sft": "train_jobs.synthetic",
    "synthetic_corpus": "train_jobs.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'train_jobs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
