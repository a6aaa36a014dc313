"""The train stage's config: `socialalign train --help` lists every field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cluster.config import has_dotted
from cluster.presets import PresetValue, WithPresets
from pac_lora import PACLoraConfig


class TrainConfig(WithPresets):
    """Stage 3: fine-tune PAC-LoRA (or the LoRA baseline) with Ray Train + DeepSpeed ZeRO.

    Defaults follow the research recipe: lr 2e-5 cosine with 10% warmup, 2 epochs, effective batch
    16, weight decay 0.01, gradient clipping 1.0, max length 1024; `preset: research` also takes
    what we do differently from it (docs/presets.md). The same run name in the same storage
    resumes from its latest checkpoint."""

    PRESETS: ClassVar[dict[str, dict[str, PresetValue]]] = {
        "research": {
            "adapter.routing": PresetValue(
                "token",
                "sequence routing gates every token, the response included, from its span's mean, so training "
                "and generation route alike at the cost of a plain LoRA; the research routes per token, and the "
                "response tokens that carry the loss see uniform gates",
            ),
            "lora_learning_rate": PresetValue(
                5e-6,
                "the LoRA baseline trains at learning_rate, as PAC-LoRA does, so the two compare at one learning "
                "rate; the research ran its baseline at 5e-6 (PAC-LoRA at 2e-5)",
            ),
            "loss_weighting": PresetValue(
                "token",
                "each micro-batch's mean loss counts the same (with one row per micro-batch: each post), so long "
                "posts do not outweigh short ones; the research's Trainer (transformers 4.46) averages over every "
                "response token of the optimizer step",
            ),
            "master_weights": PresetValue(
                "bf16",
                "fp32 master weights and AdamW state keep small updates that bf16 rounds away (a 5e-6 step is "
                "below bf16's resolution for most weights); the research trains its bf16 adapter in place",
            ),
        }
    }

    base_model: str = Field(
        "Qwen/Qwen2.5-7B-Instruct", description="local Hugging Face model directory (never downloaded)"
    )
    sft_path: Path = Field(Path("data/dataset/sft"), description="SFT set: <sft_path>/train/*.parquet (build-dataset)")
    output_dir: Path = Field(Path("data/train"), description="the adapter goes to <output_dir>/<run_name>/adapter")
    method: Literal["pac_lora", "lora"] = Field(
        "pac_lora", description="pac_lora, or lora: the peft LoRA baseline with the same rank and target modules"
    )
    prompt_variant: Literal["full", "without_persona", "without_history"] = Field(
        "full", description="train on the SFT rows of this prompt variant"
    )
    adapter: PACLoraConfig = Field(
        default_factory=PACLoraConfig,
        description="the adapter's shape and routing; the lora method uses r, alpha, dropout and target_modules",
    )
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU on GPU nodes)")
    use_gpu: bool = Field(False, description="one GPU per worker unless resources_per_worker says otherwise")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="e.g. {CPU: 8, GPU: 1}; empty: Ray Train's default (1 CPU or 1 GPU)"
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how Ray places the workers' bundles: PACK (as few nodes as possible, Ray's default), "
        "SPREAD, STRICT_PACK (one node) or STRICT_SPREAD (one worker per node; fails if nodes are too few)",
    )
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage: 2 or 3")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    learning_rate: float = Field(
        2e-5, gt=0, description="peak learning rate (AdamW); the LoRA baseline's too unless lora_learning_rate is set"
    )
    lora_learning_rate: float | None = Field(
        None, gt=0, description="peak learning rate of method=lora (None: learning_rate; a learning_rate you set "
        "explicitly wins over the preset's)",
    )
    epochs: float = Field(2, gt=0, description="passes over the training rows (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    effective_batch_size: int = Field(
        16, ge=1, description="rows per optimizer step over all workers = micro_batch_size x accumulation x workers"
    )
    micro_batch_size: int = Field(1, ge=1, description="rows per forward pass on one worker")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps with linear warmup")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay on the adapter")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping")
    loss_weighting: Literal["micro_batch", "token"] = Field(
        "micro_batch",
        description="micro_batch: every micro-batch's mean token loss counts the same; token: every response "
        "token of the optimizer step counts the same, over all workers (the research's Trainer)",
    )
    master_weights: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="when training in bf16: fp32 master weights and AdamW state (DeepSpeed's default), or bf16 "
        "weights, gradients and AdamW state updated in place (the research's Trainer)",
    )
    max_length: int = Field(
        1024, ge=16, description="tokens per row; longer prompts are skipped and counted, long responses truncated"
    )
    gradient_checkpointing: bool = Field(
        False, description="activation checkpointing of every decoder layer: the backward pass recomputes each "
        "layer's activations instead of keeping them (long rows, a 7B on one GPU; about a third more compute)",
    )
    checkpoint_every_steps: int = Field(50, ge=1, description="checkpoint every N optimizer steps (and at the end)")
    keep_checkpoints: int | None = Field(2, ge=1, description="checkpoints kept in storage (None: all)")
    log_every_steps: int = Field(
        10, ge=1, description="log and report metrics to Ray Train every N steps (each report is a barrier)"
    )
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from (from the last checkpoint)")
    run_name: str | None = Field(
        None, description="Ray Train run name, the key for resuming (default: <method>-<prompt_variant>)"
    )
    storage_path: str | None = Field(
        None,
        description="where checkpoints go: a shared path or s3://... on a multi-node cluster (default: output_dir)",
    )
    resume: bool = Field(True, description="continue the run's latest checkpoint if there is one; false: refuse")
    seed: int = Field(42, description="adapter initialisation and the data shuffles (driver, then each epoch)")

    @model_validator(mode="before")
    @classmethod
    def _explicit_learning_rate_covers_lora(cls, data: Any) -> Any:
        """A learning_rate set explicitly is the LoRA baseline's too, over a preset's lora_learning_rate.

        Runs before the preset is applied (a subclass's before-validator runs first)."""
        if isinstance(data, dict) and has_dotted(data, "learning_rate") and not has_dotted(data, "lora_learning_rate"):
            data = {**data, "lora_learning_rate": None}
        return data

    @property
    def peak_learning_rate(self) -> float:
        """The learning rate this run's method trains at."""
        if self.method == "lora" and self.lora_learning_rate is not None:
            return self.lora_learning_rate
        return self.learning_rate

    @field_validator("micro_batch_size")
    @classmethod
    def _batch_sizes_fit(cls, value: int, info) -> int:  # noqa: ANN001 - pydantic's ValidationInfo
        workers, effective = info.data.get("num_workers"), info.data.get("effective_batch_size")
        if workers and effective and effective % (value * workers):
            raise ValueError(
                f"effective_batch_size {effective} must be a multiple of micro_batch_size x num_workers "
                f"({value} x {workers})"
            )
        return value

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][\w.\-]*$", value):
            raise ValueError("expected letters, digits, '.', '_' or '-' (it names a directory)")
        return value
