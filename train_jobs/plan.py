"""How many steps a run takes, and the DeepSpeed config and LR schedule that follow from the YAML.

Every worker must call the optimizer the same number of times (ZeRO's collectives), so the
step count is fixed on the driver from the number of usable rows before any worker starts.
Ray Train splits the rows with `streaming_split(equal=True)`: each of W workers reads exactly
rows // W of them per epoch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from cluster.config import ConfigError
from train_jobs.config import TrainConfig


@dataclass(frozen=True)
class StepPlan:
    rows: int  # usable rows in the training set
    world_size: int
    micro_batch_size: int  # rows per forward pass on one worker
    accumulation: int  # micro-batches per optimizer step on each worker
    micro_batches_per_epoch: int  # per worker
    total_steps: int  # optimizer steps of the whole run
    warmup_steps: int
    bf16: bool

    @property
    def effective_batch_size(self) -> int:
        return self.micro_batch_size * self.accumulation * self.world_size

    @property
    def total_micro_batches(self) -> int:
        return self.total_steps * self.accumulation

    @property
    def epochs(self) -> float:
        return self.total_micro_batches / self.micro_batches_per_epoch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, micro-batches already consumed in it) once `step` optimizer steps are done."""
        return divmod(step * self.accumulation, self.micro_batches_per_epoch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_steps(config: TrainConfig, rows: int) -> StepPlan:
    """The step plan for `rows` usable rows; a ConfigError when the batch sizes do not fit together."""
    workers, micro = config.num_workers, config.micro_batch_size
    if config.effective_batch_size % (micro * workers):
        raise ConfigError(
            f"effective_batch_size: {config.effective_batch_size} is not a multiple of "
            f"micro_batch_size x num_workers = {micro} x {workers}"
        )
    rows_per_worker = rows // workers
    if rows_per_worker == 0:
        raise ConfigError(f"num_workers: {workers} workers but only {rows} usable training rows")
    accumulation = config.effective_batch_size // (micro * workers)
    per_epoch = math.ceil(rows_per_worker / micro)
    if config.max_steps is not None:
        total = config.max_steps
    else:
        total = max(1, math.floor(config.epochs * per_epoch / accumulation))
    return StepPlan(
        rows=rows,
        world_size=workers,
        micro_batch_size=micro,
        accumulation=accumulation,
        micro_batches_per_epoch=per_epoch,
        total_steps=total,
        warmup_steps=math.ceil(config.warmup_ratio * total),
        bf16=uses_bf16(config),
    )


def uses_bf16(config: TrainConfig) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and config.use_gpu)


def deepspeed_config(config: TrainConfig, plan: StepPlan) -> dict[str, Any]:
    """ZeRO 2 or 3; torch AdamW comes from the caller (no "optimizer" block: on CPU it compiles an op)."""
    zero: dict[str, Any] = {"stage": config.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if config.zero_stage == 3:
        # Adapter parameters are small: keep them gathered instead of re-fetching every step.
        zero["stage3_param_persistence_threshold"] = 1e5
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return {
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.accumulation,
        "train_batch_size": plan.effective_batch_size,
        "gradient_clipping": config.max_grad_norm,
        "zero_optimization": zero,
        "bf16": bf16_config(config, plan),
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def bf16_config(config: TrainConfig, plan: StepPlan) -> dict[str, Any]:
    """DeepSpeed's bf16 block: off in fp32; in bf16 with fp32 master weights and AdamW state, or,
    with master_weights=bf16, bf16 weights, gradients and AdamW state updated in place (the research's
    Trainer on its bf16 model, with no fp32 copy)."""
    if not plan.bf16:
        return {"enabled": False}
    if config.master_weights == "bf16":
        return {"enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    return {"enabled": True}


def cosine_with_warmup(optimizer: Any, plan: StepPlan) -> Any:
    """Linear warmup to the peak LR, then cosine decay to 0 at the last step (the research schedule)."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
