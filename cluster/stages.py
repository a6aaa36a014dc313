"""The stages of the pipeline, in data-flow order: CLI name, module, config model, runner.

A stage's runner is a callable `run(config) -> int` named as "module:function" and imported only
when the stage runs, so `--help` and config checks never import torch or Ray. A stage whose
runner is None is not built yet and says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from cluster.stage_configs import (
    CrawlConfig,
    DatasetConfig,
    DemoConfig,
    EvaluateConfig,
    PredictConfig,
    ServeConfig,
    StageConfig,
    TrainConfig,
)


@dataclass(frozen=True)
class Flag:
    """A command-line flag that is sugar for a config override (`--steps a,b` == `steps=[a,b]`)."""

    name: str
    field: str
    help: str
    kind: Literal["value", "csv", "append", "switch"] = "value"
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config: type[StageConfig]
    summary: str
    issue: int
    runner: str | None = None
    flags: tuple[Flag, ...] = field(default=())
    # Sub-actions with their own arguments (`socialalign crawl export ...`): name -> "module:main(argv, prog)".
    actions: dict[str, str] = field(default_factory=dict)

    @property
    def built(self) -> bool:
        return self.runner is not None

    def load_runner(self) -> Callable[[StageConfig], int]:
        if self.runner is None:
            raise NotImplementedError(self.name)
        return _load(self.runner)

    def load_action(self, name: str) -> Callable[..., int]:
        return _load(self.actions[name])


def _load(target: str) -> Callable[..., int]:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "crawl",
            "crawl_actors",
            CrawlConfig,
            "crawl topics, posts, users and timelines from Weibo into Parquet",
            issue=4,
            runner="crawl_actors.job:run",
            actions={"export": "crawl_actors.export:main"},
        ),
        Stage(
            "build-dataset",
            "dataset_jobs",
            DatasetConfig,
            "clean, retrieve, extract personas and build the SFT set (Ray Data)",
            issue=5,
            runner="dataset_jobs.job:run",
            flags=(
                Flag("--steps", "steps", "comma-separated subset of clean,retrieve,persona,sft", kind="csv"),
            ),
        ),
        Stage(
            "train",
            "train_jobs",
            TrainConfig,
            "fine-tune PAC-LoRA or the LoRA baseline (Ray Train + DeepSpeed)",
            issue=6,
            runner="train_jobs.job:run",
        ),
        Stage(
            "serve",
            "serve",
            ServeConfig,
            "serve micro/macro prediction and an OpenAI-compatible API (Ray Serve)",
            issue=7,
            runner="serve.app:run",
        ),
        Stage(
            "predict",
            "serve.predict",
            PredictConfig,
            "predict posts for a test split with a given adapter",
            issue=8,
            runner="serve.predict:run",
        ),
        Stage(
            "evaluate",
            "serve.evaluate",
            EvaluateConfig,
            "label, score and report prediction sets (micro and macro metrics)",
            issue=8,
            runner="serve.evaluate.job:run",
            flags=(Flag("--predictions", "predictions", "a prediction Parquet file (repeatable)", kind="append"),),
        ),
        Stage(
            "demo",
            "cluster.demo",
            DemoConfig,
            "run the whole pipeline end to end on a local Ray and the Weibo simulator",
            issue=10,
            runner="cluster.demo:run",
            flags=(
                Flag("--size", "size", "demo size", choices=("smoke", "small", "medium")),
                Flag("--out", "out", "output directory"),
                Flag("--keep-serving", "keep_serving", "leave the endpoint up at the end", kind="switch"),
                Flag("--address", "ray.address", "run against an existing Ray cluster (auto, ray://...)"),
            ),
        ),
    )
}


def stage_for_module(module: str) -> Stage:
    return next(stage for stage in STAGES.values() if stage.module == module)
