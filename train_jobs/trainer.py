"""The Ray Train side of a run: the TorchTrainer that runs `loop.train_loop` on every worker."""

from __future__ import annotations

from typing import Any

from train_jobs.config import TrainConfig
from train_jobs.plan import StepPlan
from train_jobs.quiet import default_ingest_options, without_split_progress, worker_env


def build_trainer(
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
            placement_strategy=config.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            worker_runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": extensions_dir, **worker_env(config.use_gpu)}},
            # Ray Train logs every report at INFO; our own step lines say what matters.
            logging_config=LoggingConfig(log_level="INFO" if config.log_level == "DEBUG" else "WARNING"),
        ),
        datasets={"train": without_split_progress(dataset)},
        dataset_config=_deterministic_shards(DataConfig),
    )


def _deterministic_shards(data_config: Any) -> Any:
    """Every epoch, and every restart, gives each worker the same rows in the same order, so a run
    that resumes mid-epoch skips exactly the micro-batches it had trained on (Ray's default lets
    block locality pick the order)."""
    options = default_ingest_options(data_config)
    options.preserve_order = True
    return data_config(execution_options=options)


def close_worker_bars() -> None:
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
