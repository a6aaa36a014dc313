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
        "placeholder-unlabelled | module:factory ('llm' still means llm-judge)",
    )
    judge: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)

    @field_validator("labeler")
    @classmethod
    def _old_labeler_name(cls, value: str) -> str:
        return "llm-judge" if value == "llm" else value
