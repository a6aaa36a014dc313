"""The demo's config and its sizes: how big a world the simulator makes, and how long training runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from cluster.llm import LLMEndpointConfig
from cluster.stage_config import StageConfig


class DemoConfig(StageConfig):
    """The whole pipeline end to end on the embedded default: simulator, crawl, dataset, a tiny
    pretrained base model, PAC-LoRA training, serving, prediction and the evaluation report."""

    size: Literal["smoke", "small", "medium"] = Field("small", description="smoke (tests) | small | medium")
    out: Path = Field(Path("demo-out"), description="every artifact goes under this directory")
    keep_serving: bool = Field(False, description="leave the endpoint up at the end (Ctrl-C stops it)")
    port: int = Field(0, ge=0, le=65535, description="serving port (0: a free one)")
    persona: LLMEndpointConfig = Field(
        default_factory=LLMEndpointConfig, description="an OpenAI-compatible endpoint for personas (default: offline)"
    )


@dataclass(frozen=True)
class DemoSize:
    users: int
    history: tuple[int, int]
    hot_topic_posts: int
    topic_posts: int
    hidden: int
    pretrain_steps: int
    epochs: float


SIZES = {
    "smoke": DemoSize(users=30, history=(10, 30), hot_topic_posts=120, topic_posts=40, hidden=64,
                      pretrain_steps=60, epochs=0.5),
    "small": DemoSize(users=100, history=(10, 60), hot_topic_posts=400, topic_posts=80, hidden=128,
                      pretrain_steps=300, epochs=1.0),
    "medium": DemoSize(users=200, history=(20, 120), hot_topic_posts=1200, topic_posts=150, hidden=192,
                       pretrain_steps=800, epochs=2.0),
}
