"""The evaluate stage's config: `socialalign evaluate --help` lists every field."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from cluster.llm import LLMEndpointConfig
from cluster.stage_config import StageConfig


class EvaluateConfig(StageConfig):
    """Evaluation, part 2: label, score and report one or more prediction sets."""

    predictions: list[Path] = Field(default_factory=list, description="prediction Parquet files")
    output_dir: Path = Path("data/evaluation")
    labeler: str = Field(
        "offline", description="sentiment labeler, named as in serve: offline | llm-judge (the judge endpoint) | "
        "placeholder-unlabelled | simulator-lexicon (truth-aware: the simulator's corpus only) | module:factory "
        "('llm' still means llm-judge)",
    )
    judge: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)
    truth: Path | None = Field(
        None, description="known truth (a simulator run): Parquet with each real post's mid and true sentiment "
        "(and stance, topic_terms; crawl_actors.simulator.truth_table writes it); real posts then count as their "
        "true sentiment, and the labeller is scored against it",
    )
    runs: list[Path] = Field(
        default_factory=list, description="earlier evaluate output_dirs (one per seed or world) to put side by side "
        "instead of evaluating predictions: mean and sd per method and figure, seeds.md, seeds.png, combined.json",
    )
    dataset: Path | None = Field(
        None, description="build-dataset's output_dir: adds the method history-baseline (each case's retrieved "
        "history posts, labelled: their plurality per post, their pooled distribution per topic)",
    )

    @field_validator("labeler")
    @classmethod
    def _old_labeler_name(cls, value: str) -> str:
        return "llm-judge" if value == "llm" else value
