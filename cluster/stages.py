"""The stages of the pipeline, in data-flow order: CLI name, module, config model, runner.

This registry is the one place where the entry layer (the CLI, submit, the demo, the k8s checks)
names the stages, and it names them as `python -m` and `ray job submit` run them: by module.
Config models and runners are "module:attribute" strings, imported only when asked for, so the
foundation below imports no stage, and `--help` and config checks never import torch or Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cluster.stage_config import StageConfig


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
    summary: str
    config: str  # "module:Model", the stage's one config model
    runner: str  # "module:function", `run(config) -> int`; raises ConfigError for a config problem
    flags: tuple[Flag, ...] = field(default=())
    # Sub-actions with their own arguments (`socialalign crawl export ...`): name -> "module:main(argv, prog)".
    actions: dict[str, str] = field(default_factory=dict)

    def config_model(self) -> type[StageConfig]:
        return load(self.config)

    def load_runner(self) -> Callable[[StageConfig], int]:
        return load(self.runner)

    def load_action(self, name: str) -> Callable[..., int]:
        return load(self.actions[name])


def load(target: str) -> Any:
    """The attribute a "module:attribute" string names."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "crawl",
            "crawl_actors",
            "crawl topics, posts, users and timelines from Weibo into Parquet",
            config="crawl_actors.config:CrawlConfig",
            runner="crawl_actors.job:run",
            actions={"export": "crawl_actors.export:main"},
        ),
        Stage(
            "build-dataset",
            "dataset_jobs",
            "clean, retrieve, extract personas and build the SFT set (Ray Data)",
            config="dataset_jobs.config:DatasetConfig",
            runner="dataset_jobs.job:run",
            flags=(
                Flag("--steps", "steps", "comma-separated subset of clean,retrieve,persona,sft", kind="csv"),
            ),
        ),
        Stage(
            "train",
            "train_jobs",
            "fine-tune PAC-LoRA or the LoRA baseline (Ray Train + DeepSpeed)",
            config="train_jobs.config:TrainConfig",
            runner="train_jobs.job:run",
        ),
        Stage(
            "serve",
            "serve",
            "serve micro/macro prediction and an OpenAI-compatible API (Ray Serve)",
            config="serve.config:ServeConfig",
            runner="serve.app:run",
            actions={"deploy-config": "serve.deploy_config:main"},
        ),
        Stage(
            "predict",
            "serve.predict",
            "predict posts for a test split with a given adapter",
            config="serve.config:PredictConfig",
            runner="serve.predict:run",
        ),
        Stage(
            "evaluate",
            "serve.evaluate",
            "label, score and report prediction sets (micro and macro metrics)",
            config="serve.evaluate.config:EvaluateConfig",
            runner="serve.evaluate.job:run",
            flags=(Flag("--predictions", "predictions", "a prediction Parquet file (repeatable)", kind="append"),),
        ),
        Stage(
            "demo",
            "cluster.demo",
            "run the whole pipeline end to end on a local Ray and the Weibo simulator",
            config="cluster.demo:DemoConfig",
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


class StageFailed(RuntimeError):
    """A stage run through `run` ended with a non-zero exit code."""


def run(name: str, settings: dict[str, Any]) -> None:
    """Run stage `name` in this process, as `socialalign <name>` would with a YAML file holding
    `settings` (validated by the stage's config model); raises StageFailed unless it exits 0."""
    stage = STAGES[name]
    code = stage.load_runner()(stage.config_model().model_validate(settings))
    if code:
        raise StageFailed(f"{name} exited with code {code}")
