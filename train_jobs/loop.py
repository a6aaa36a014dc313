"""The training loop every Ray Train worker runs, in one place: model, DeepSpeed engine, resume,
micro-batches from this worker's data shard, optimizer steps, metrics, checkpoints.

DeepSpeed reuses the process group Ray Train set up (gloo on CPU, nccl on GPU) and does the
gradient accumulation, clipping, ZeRO partitioning and the LR schedule; the loop counts optimizer
steps, which decide where a checkpoint lands and therefore where a restarted worker resumes.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cluster.metrics import count, gauge
from pac_lora import IGNORE_INDEX, Probe
from train_jobs.checkpoint import load_checkpoint, save_checkpoint
from train_jobs.config import TrainConfig
from train_jobs.data import CollateRows, epoch_micro_batches
from train_jobs.model import build_model, model_inputs
from train_jobs.plan import StepPlan, cosine_with_warmup, deepspeed_config
from train_jobs.quiet import prints_logged_at_debug, quiet_worker_logs

log = logging.getLogger("train_jobs")


@dataclass
class Window:
    """What happened since the last report (loss, tokens, time), summed over every worker."""

    loss_sum: float = 0.0
    micro_batches: int = 0
    tokens: int = 0
    steps: int = 0
    seconds: float = 0.0

    def add(self, loss_sum: float, micro_batches: int, tokens: int, seconds: float) -> None:
        self.loss_sum += loss_sum
        self.micro_batches += micro_batches
        self.tokens += tokens
        self.steps += 1
        self.seconds += seconds


@dataclass
class Totals:
    """The run so far, carried across restarts in the checkpoint's train state."""

    step: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    first_loss: float | None = None
    resumed_from_step: int = 0


def train_loop(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker (TorchTrainer's train_loop_per_worker)."""
    import deepspeed
    import ray.train
    import ray.train.torch

    config = TrainConfig.model_validate(loop_config["config"])
    plan = StepPlan(**loop_config["plan"])
    options = loop_config["options"]
    # Ray Train already sends this worker's log records to the driver; only set the levels.
    log.setLevel(config.log_level)
    quiet_worker_logs(config.log_level)
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config.seed)  # the same initial adapter on every rank

    device = ray.train.torch.get_device()
    model = build_model(config, torch.bfloat16 if plan.bf16 else torch.float32).to(device)
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.peak_learning_rate, weight_decay=config.weight_decay)
    with prints_logged_at_debug("deepspeed.initialize"):
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=cosine_with_warmup(optimizer, plan),
            config=deepspeed_config(config, plan),
            dist_init_required=False,
        )
    engine.train()

    totals = Totals()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(engine, Path(directory))
        totals = Totals(
            state["step"], state["tokens"], state["train_seconds"], state["first_loss"], resumed_from_step=state["step"]
        )
        if rank == 0:
            log.info("resumed from the checkpoint at step %d of %d", totals.step, plan.total_steps)
        if totals.step >= plan.total_steps:  # a finished run started again: nothing left to train
            # Ray Train's result carries the metrics of the latest *checkpoint*, so report the
            # finished one again (rank 0's copy is complete) with this run's metrics.
            metrics = {**state["metrics"], "resumed_from_step": totals.step}
            with checkpoint.as_directory() as directory:
                again = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
                ray.train.report(metrics, checkpoint=again)
            return

    shard = ray.train.get_dataset_shard("train")
    collate = CollateRows(options["pad_token_id"])
    tags = {"run": options["run_name"], "method": config.method}
    bar = _progress_bar(plan, totals.step) if rank == 0 and options.get("progress", True) else None
    window, probe_batch = Window(), None
    step_began = time.perf_counter()
    # Loss sum, micro-batches and tokens of the current optimizer step, kept on the device so that
    # nothing waits for the accelerator until the step ends.
    running = torch.zeros(3, device=device)
    # From the epoch and micro-batch where the checkpoint resumed from left off, one optimizer
    # step's micro-batches at a time (a step may run on into the next epoch).
    stream = _micro_batches(shard, plan, collate, config.seed, rank, *plan.position(totals.step))

    for group in _step_groups(stream, plan.accumulation):
        weights = loss_weights(
            config.loss_weighting, [batch["labels"] for batch in group], plan.world_size,
            lambda total: _all_reduce_sum(total.to(device)),
        )
        for batch, weight in zip(group, weights, strict=True):
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            if probe_batch is None:
                probe_batch = {key: value.detach().cpu() for key, value in batch.items()}
            loss = engine(**model_inputs(config.method, batch)).loss
            engine.backward(loss if weight is None else loss * weight)
            boundary = engine.is_gradient_accumulation_boundary()
            learning_rate = optimizer.param_groups[0]["lr"]
            engine.step()
            running[0] += loss.detach().float()
            running[1] += 1
            running[2] += batch["attention_mask"].sum()
            if not boundary:
                continue
            summed = _all_reduce_sum(running.clone())
            seconds = time.perf_counter() - step_began
            totals.step += 1
            totals.tokens += int(summed[2])
            totals.train_seconds += seconds
            window.add(float(summed[0]), int(summed[1]), int(summed[2]), seconds)
            step_loss = float(summed[0]) / max(int(summed[1]), 1)
            if totals.first_loss is None:
                totals.first_loss = step_loss
            _record_step(rank, tags, step_loss, learning_rate, int(summed[2]), seconds)
            if bar is not None:
                bar.set_description(_bar_text(window, learning_rate, step_loss))
                bar.update(1)
            if _report_if_due(engine, config, plan, options, totals, window, learning_rate, rank, probe_batch):
                window = Window()
            running.zero_()
            step_began = time.perf_counter()
        if totals.step >= plan.total_steps:
            break
    if bar is not None:
        bar.close()
        # The close travels as a line on this worker's stdout, block-buffered into a log file:
        # unflushed, it dies with the worker and the driver redraws a finished bar forever.
        sys.stdout.flush()


def _micro_batches(
    shard: Any, plan: StepPlan, collate: CollateRows, seed: int, rank: int, epoch: int, skip: int
) -> Iterator[dict[str, torch.Tensor]]:
    """This worker's micro-batches, epoch after epoch, from micro-batch `skip` of `epoch` on."""
    while True:
        seen = 0
        for batch in epoch_micro_batches(shard, plan.micro_batch_size, collate, seed, epoch, rank, skip):
            seen += 1
            yield batch
        if seen == 0:
            raise RuntimeError(f"worker {rank}: its data shard is empty")
        epoch, skip = epoch + 1, 0


def _step_groups(stream: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """The stream in groups of `size`: the micro-batches of one optimizer step each."""
    while True:
        yield [next(stream) for _ in range(size)]


def loss_weights(
    weighting: str, labels: list[torch.Tensor], world_size: int, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor]
) -> list[float | None]:
    """What each micro-batch's mean loss is multiplied by before the backward pass of one optimizer step.

    micro_batch: nothing (None): DeepSpeed averages the micro-batch means over the accumulation
    steps and the workers. token: n_i * accumulation * workers / N, where n_i counts the response
    tokens the micro-batch's loss averages over (labels[:, 1:], as the model shifts them) and N
    those of the whole step on every worker, so that DeepSpeed's averaging leaves the mean over
    every response token of the step, as transformers' Trainer computes it (`num_items_in_batch`).
    """
    if weighting == "micro_batch":
        return [None] * len(labels)
    counts = torch.stack([(batch[:, 1:] != IGNORE_INDEX).sum() for batch in labels]).double()
    total = float(all_reduce_sum(counts.sum().reshape(1))[0])
    return [float(n) * len(labels) * world_size / total for n in counts]


def _report_if_due(
    engine: Any,
    config: TrainConfig,
    plan: StepPlan,
    options: dict[str, Any],
    totals: Totals,
    window: Window,
    learning_rate: float,
    rank: int,
    probe_batch: dict[str, torch.Tensor] | None,
) -> bool:
    """Report metrics every log_every_steps, with a checkpoint every checkpoint_every_steps and at the end."""
    import ray.train

    step, last = totals.step, totals.step >= plan.total_steps
    save = last or step % config.checkpoint_every_steps == 0
    if not (save or step % config.log_every_steps == 0):
        return False
    metrics = _metrics(engine, plan, totals, window, learning_rate)
    if rank == 0:
        log.info(
            "step %d/%d  loss %.4f  lr %.3g  %.0f tokens/s  %.3f s/step",
            step, plan.total_steps, metrics["loss"], learning_rate, metrics["tokens_per_s"], metrics["step_time_s"],
        )
    if not save:
        ray.train.report(metrics)
        return True
    state = {
        "step": step,
        "tokens": totals.tokens,
        "train_seconds": totals.train_seconds,
        "first_loss": totals.first_loss,
        "total_steps": plan.total_steps,
        "method": config.method,
        "metrics": metrics,
    }
    probe = _probe(engine, config.method, probe_batch) if last and probe_batch is not None else None
    with tempfile.TemporaryDirectory(prefix="train-checkpoint-") as directory:
        save_checkpoint(engine, state, Path(directory), rank, probe)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    if step == options.get("fail_after_step") and totals.resumed_from_step == 0 and rank == plan.world_size - 1:
        # Fault injection for tests: this worker dies once its checkpoint is registered.
        ray.train.get_all_reported_checkpoints()
        log.warning("fault injection: worker %d exits after the checkpoint at step %d", rank, step)
        os._exit(1)
    return True


def _metrics(engine: Any, plan: StepPlan, totals: Totals, window: Window, learning_rate: float) -> dict[str, float]:
    metrics = {
        "step": totals.step,
        "total_steps": plan.total_steps,
        "epoch": round(totals.step * plan.accumulation / plan.micro_batches_per_epoch, 4),
        "loss": window.loss_sum / max(window.micro_batches, 1),
        "learning_rate": learning_rate,
        "tokens_per_s": window.tokens / max(window.seconds, 1e-9),
        "step_time_s": window.seconds / max(window.steps, 1),
        "tokens": totals.tokens,
        "train_seconds": totals.train_seconds,
        "first_loss": totals.first_loss,
        "resumed_from_step": totals.resumed_from_step,
        # What really trains: the DeepSpeed engine, its ZeRO stage and the optimizer wrapping AdamW.
        "engine": _class_path(engine),
        "zero_stage": engine.zero_optimization_stage(),
        "optimizer": _class_path(engine.optimizer),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return metrics


def _probe(engine: Any, method: str, batch: dict[str, torch.Tensor]) -> Probe:
    """The trained model's logits on a batch it saw, in eval mode (every rank: ZeRO-3 gathers)."""
    device = next(engine.module.parameters()).device
    inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
    engine.eval()
    try:
        with torch.no_grad():
            logits = engine(**model_inputs(method, inputs)).logits
    finally:
        engine.train()
    return Probe.of(batch, logits)


def _class_path(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def _record_step(rank: int, tags: dict[str, str], loss: float, lr: float, tokens: int, seconds: float) -> None:
    """Dashboard metrics (Prometheus via ray.util.metrics), once per optimizer step, from rank 0."""
    if rank != 0:
        return
    count("train_steps", 1, **tags)
    count("train_tokens", tokens, **tags)
    gauge("train_loss", loss, **tags)
    gauge("train_learning_rate", lr, **tags)
    gauge("train_tokens_per_s", tokens / max(seconds, 1e-9), **tags)
    gauge("train_step_time_s", seconds, **tags)


def _progress_bar(plan: StepPlan, start: int) -> Any:
    from ray.experimental.tqdm_ray import tqdm

    bar = tqdm(desc="train", total=plan.total_steps, unit="step")
    bar.update(start)
    return bar


def _bar_text(window: Window, learning_rate: float, loss: float) -> str:
    rate = window.tokens / max(window.seconds, 1e-9)
    return f"train loss={loss:.4f} lr={learning_rate:.3g} {rate:,.0f} tok/s"

