"""`socialalign train`: encode the SFT set with Ray Data, fine-tune with Ray Train + DeepSpeed, export the adapter.

    summary = train(load_config(TrainConfig, "train.yaml"))
    summary.adapter_dir   # <output_dir>/<run_name>/adapter: pac_lora.load_any_adapter reads it

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
from pathlib import Path
from typing import Any

from cluster.config import ConfigError
from cluster.metrics import count
from cluster.ray_connect import ray_session
from cluster.reports import write_success
from pac_lora import model_dir
from train_jobs.checkpoint import ADAPTER_DIR
from train_jobs.config import TrainConfig
from train_jobs.data import load_tokenizer, prepare_sft
from train_jobs.plan import StepPlan, plan_steps
from train_jobs.quiet import quiet_ray_data
from train_jobs.summary import TrainSummary, describe
from train_jobs.trainer import build_trainer, close_worker_bars

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed compiles its CPU communication op on the first run (~30 s); keep it for later runs.
DEFAULT_EXTENSIONS_DIR = REPO / ".cache" / "torch_extensions"


def run(config: TrainConfig) -> int:
    """The stage entry point: trains, prints the summary and writes the stage's _SUCCESS.json beside
    the adapter. A config problem is raised as a ConfigError (the CLI prints it)."""
    summary = train(config, progress=sys.stderr.isatty())  # a bar redrawn into a log file is noise
    print(describe(summary))
    write_success(config.output_dir / summary.run_name, "train", summary.report())
    return 0


def train(config: TrainConfig, progress: bool = True, fail_after_step: int | None = None) -> TrainSummary:
    """Train as `config` says and export the final adapter; raises on a failed run.

    `fail_after_step` is for tests: one worker dies right after the checkpoint of that step, once.
    """
    began = time.monotonic()
    base_model = _local_model_dir(config.base_model)
    run_name = config.run_name or f"{config.method}-{config.prompt_variant}"
    storage = config.storage_path or str(config.output_dir.resolve())
    _check_resume(config, storage, run_name)
    extensions_dir = os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(DEFAULT_EXTENSIONS_DIR))
    with ray_session(config.ray):
        quiet_ray_data(debug=config.log_level == "DEBUG")
        routing = config.adapter.routing if config.method == "pac_lora" else "sequence"
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
        result = build_trainer(config, plan, data.dataset, options, storage, run_name, extensions_dir).fit()
        close_worker_bars()
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


def _describe_plan(config: TrainConfig, plan: StepPlan, tokens: int, skipped: int) -> str:
    return (
        f"{plan.rows} {config.prompt_variant} rows ({tokens:,} tokens, {skipped} skipped); {plan.total_steps} steps "
        f"of {plan.effective_batch_size} rows ({plan.world_size} workers x {plan.micro_batch_size} rows x "
        f"{plan.accumulation} accumulated), {plan.epochs:.2f} epochs, ZeRO-{config.zero_stage}, "
        f"{'bf16' if plan.bf16 else 'fp32'}, {config.method}"
    )


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
    try:
        return model_dir(base_model).resolve()
    except FileNotFoundError as error:
        raise ConfigError(f"base_model: {error}; download the model first and give its directory") from None


def _check_resume(config: TrainConfig, storage: str, run_name: str) -> None:
    if config.resume or "://" in storage:
        return
    run_dir = Path(storage) / run_name
    if any(run_dir.glob("checkpoint_*")):
        raise ConfigError(
            f"resume: run {run_name} already has checkpoints in {run_dir}; set resume=true to continue it, "
            "or choose another run_name or output_dir"
        )
