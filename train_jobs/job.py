"""`socialalign train`: encode the SFT set with Ray Data, fine-tune with Ray Train + DeepSpeed, export the adapter.

    summary = train(load_config(TrainConfig, "train.yaml"))
    summary.adapter_dir   # <output_dir>/<run_name>/adapter: pac_lora.load_adapter / PeftModel.from_pretrained

A run is resumable: Ray Train keeps its checkpoints under <storage_path>/<run_name>, restarts dead
workers from the latest one (`max_failures`), and a new run with the same name and storage
continues from it instead of starting again.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import ConfigError
from cluster.metrics import count
from cluster.ray_connect import ray_session
from train_jobs.config import TrainConfig
from train_jobs.checkpoint import ADAPTER_DIR
from train_jobs.data import load_tokenizer, prepare_sft
from train_jobs.model import adapter_config
from train_jobs.plan import StepPlan, plan_steps

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed compiles its CPU communication op on the first run (~30 s); keep it for later runs.
DEFAULT_EXTENSIONS_DIR = REPO / ".cache" / "torch_extensions"


@dataclass(frozen=True)
class TrainSummary:
    run_name: str
    method: str
    rows: int
    skipped: dict[str, int]
    steps: int
    resumed_from_step: int
    tokens: int
    train_seconds: float  # inside the workers' loop, summed over attempts
    seconds: float  # wall time of the whole stage
    first_loss: float | None
    final_loss: float | None
    adapter_dir: Path
    checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


def run(config: TrainConfig) -> int:
    """The stage entry point: 0 once the adapter is written, 2 for a config problem."""
    try:
        summary = train(config)
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"socialalign train: config error: {line}", file=sys.stderr)
        return 2
    print(describe(summary))
    return 0


def train(config: TrainConfig, progress: bool = True, fail_after_step: int | None = None) -> TrainSummary:
    """Train as `config` says and export the final adapter; raises on a failed run.

    `fail_after_step` is for tests: one worker dies right after the checkpoint of that step, once.
    """
    began = time.monotonic()
    shape = adapter_config(config)
    base_model = _local_model_dir(config.base_model)
    run_name = config.run_name or f"{config.method}-{config.prompt_variant}"
    storage = config.storage_path or str(config.output_dir.resolve())
    _check_resume(config, storage, run_name)
    extensions_dir = os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(DEFAULT_EXTENSIONS_DIR))
    with ray_session(config.ray):
        routing = shape.routing if config.method == "pac_lora" else "sequence"
        data = prepare_sft(
            config.sft_path, "train", config.prompt_variant, base_model, routing, config.max_length, config.seed
        )
        for reason, rows in data.skipped.items():
            count("train_skipped_rows", rows, reason=reason)
        plan = plan_steps(config, data.rows)
        log.info("%s: %s", run_name, _describe_plan(config, plan, data.tokens, sum(data.skipped.values())))
        options = {
            "run_name": run_name,
            "pad_token_id": load_tokenizer(str(base_model)).pad_token_id,
            "progress": progress,
            "fail_after_step": fail_after_step,
        }
        log.info("training data ready after %.1fs; starting %d Ray Train workers", time.monotonic() - began,
                 config.num_workers)
        result = _trainer(config, plan, data.dataset, options, storage, run_name, extensions_dir).fit()
        _close_worker_bars()
        log.info("training finished after %.1fs", time.monotonic() - began)
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_name} ended without a checkpoint")
    adapter_dir = _export_adapter(result.checkpoint, config.output_dir / run_name / ADAPTER_DIR)
    metrics = dict(result.metrics or {})
    return TrainSummary(
        run_name=run_name,
        method=config.method,
        rows=data.rows,
        skipped=data.skipped,
        steps=int(metrics.get("step", plan.total_steps)),
        resumed_from_step=int(metrics.get("resumed_from_step", 0)),
        tokens=int(metrics.get("tokens", 0)),
        train_seconds=float(metrics.get("train_seconds", 0.0)),
        seconds=time.monotonic() - began,
        first_loss=metrics.get("first_loss"),
        final_loss=metrics.get("loss"),
        adapter_dir=adapter_dir,
        checkpoint=result.checkpoint.path,
        metrics=metrics,
    )


def describe(summary: TrainSummary) -> str:
    resumed = f" (resumed from step {summary.resumed_from_step})" if summary.resumed_from_step else ""
    skipped = sum(summary.skipped.values())
    loss = ""
    if summary.first_loss is not None and summary.final_loss is not None:
        loss = f", loss {summary.first_loss:.4f} -> {summary.final_loss:.4f}"
    return (
        f"train: {summary.method} run {summary.run_name}: {summary.steps} steps{resumed} on {summary.rows} rows"
        f"{f' ({skipped} skipped)' if skipped else ''}, {summary.tokens:,} tokens in {summary.train_seconds:.1f}s "
        f"of training ({summary.tokens_per_s:,.0f} tokens/s, {summary.seconds:.1f}s in all){loss}\n"
        f"adapter: {summary.adapter_dir}\ncheckpoint: {summary.checkpoint}"
    )


def _describe_plan(config: TrainConfig, plan: StepPlan, tokens: int, skipped: int) -> str:
    return (
        f"{plan.rows} {config.prompt_variant} rows ({tokens:,} tokens, {skipped} skipped); {plan.total_steps} steps "
        f"of {plan.effective_batch_size} rows ({plan.world_size} workers x {plan.micro_batch_size} rows x "
        f"{plan.accumulation} accumulated), {plan.epochs:.2f} epochs, ZeRO-{config.zero_stage}, "
        f"{'bf16' if plan.bf16 else 'fp32'}, {config.method}"
    )


def _trainer(
    config: TrainConfig, plan: StepPlan, dataset: Any, options: dict[str, Any], storage: str, run_name: str,
    extensions_dir: str,
) -> Any:
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from train_jobs.loop import train_loop

    return TorchTrainer(
        train_loop,
        train_loop_config={"config": config.model_dump(mode="json"), "plan": plan.to_dict(), "options": options},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker=dict(config.resources_per_worker) or None,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            worker_runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": extensions_dir}},
            # Ray Train logs every report at INFO; our own step lines say what matters.
            logging_config=LoggingConfig(log_level="INFO" if config.log_level == "DEBUG" else "WARNING"),
        ),
        datasets={"train": dataset},
        dataset_config=_deterministic_shards(DataConfig),
    )


def _deterministic_shards(data_config: Any) -> Any:
    """Every epoch, and every restart, gives each worker the same rows in the same order, so a run
    that resumes mid-epoch skips exactly the micro-batches it had trained on (Ray's default lets
    block locality pick the order)."""
    options = data_config.default_ingest_options()
    options.preserve_order = True
    return data_config(execution_options=options)


def _export_adapter(checkpoint: Any, destination: Path) -> Path:
    """Copy the adapter of the run's final checkpoint to `destination` (replacing an older one)."""
    destination = destination.resolve()
    with checkpoint.as_directory() as directory:
        source = Path(directory) / ADAPTER_DIR
        if not source.is_dir():
            raise RuntimeError(f"checkpoint {checkpoint.path} holds no adapter")
        staging = destination.with_name(destination.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    return destination


def _local_model_dir(base_model: str) -> Path:
    path = Path(base_model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"base_model: {base_model} is not a local Hugging Face model directory (no config.json); "
            "download the model first and give its directory"
        )
    return path.resolve()


def _check_resume(config: TrainConfig, storage: str, run_name: str) -> None:
    if config.resume or "://" in storage:
        return
    run_dir = Path(storage) / run_name
    if any(run_dir.glob("checkpoint_*")):
        raise ConfigError(
            f"resume: run {run_name} already has checkpoints in {run_dir}; set resume=true to continue it, "
            "or choose another run_name or output_dir"
        )


def _close_worker_bars() -> None:
    """Close the driver's copies of the workers' progress bars. A worker's closing update can be lost
    when Ray Train stops it, and Ray would then redraw the finished bar under every later log line."""
    from ray.experimental import tqdm_ray

    manager = tqdm_ray.instance()
    with manager.lock:
        for group in manager.bar_groups.values():
            for bar in group.bars_by_uuid.values():
                bar.close()
            group.bars_by_uuid.clear()
        manager.bar_groups.clear()
