"""The build-dataset stage's config: `socialalign build-dataset --help` lists every field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from cluster.llm import LLMEndpointConfig
from cluster.stage_config import StageConfig


class DatasetConfig(StageConfig):
    """build-dataset: clean, retrieve, extract personas and build the SFT set with Ray Data."""

    crawl_dir: Path = Field(Path("data/crawl"), description="output_dir of the crawl")
    output_dir: Path = Path("data/dataset")
    steps: list[Literal["clean", "retrieve", "persona", "sft"]] = Field(
        default_factory=lambda: ["clean", "retrieve", "persona", "sft"]
    )
    force: bool = Field(False, description="run the steps even when their outputs are up to date")
    min_history_posts: int = Field(10, ge=1, description="users with fewer usable history posts are dropped")
    exclusion_words: list[str] | None = Field(
        None, description="posts containing any are dropped (None: the built-in ads/lottery/fan-club list)"
    )
    exclude_own_name: bool = Field(True, description="drop history posts that contain the user's own name")
    top_k: int = Field(5, ge=1, description="history posts retrieved per case")
    bm25_k1: float = Field(1.5, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    history_before_post: bool = Field(True, description="retrieve only history posted before the target post")
    persona: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)
    persona_posts: int = Field(5, ge=1, description="recent posts shown to the persona model")
    persona_workers: int = Field(1, ge=1, description="Ray actors calling the persona endpoint")
    variants: list[Literal["full", "without_persona", "without_history"]] = Field(
        default_factory=lambda: ["full", "without_persona", "without_history"]
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of topics held out for test")
    test_topics: list[str] | None = Field(None, description="hold out exactly these topics (test_fraction unused)")
    seed: int = 0
