"""The fields every stage's config has: where it runs on Ray, and how much it logs.

Each stage declares its own config model (`<stage>/config.py`), a subclass of `StageConfig`;
`cluster.stages` names them, and `cluster.config.load_config` builds them from YAML, the
environment and `key=value` arguments.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from cluster.config import StrictModel, from_env

_RAY_ADDRESS = re.compile(r"^(local|auto|ray://[^\s/]+|https?://[^\s/]+/?|[\w.\-]+:\d+)$")


class RayConfig(StrictModel):
    """Where a stage runs. `local` starts a Ray sized for this machine unless RAY_ADDRESS is set
    (as it is inside `ray job submit` and a KubeRay RayJob), in which case that cluster is joined."""

    address: str = Field(
        "local",
        description="local | auto | ray://HOST:10001 | HOST:PORT (GCS) | "
        "http://HOST:8265 (submits the stage as a Ray job)",
    )
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of a local Ray (default: max(4, cores))")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local Ray (default: detected)")
    object_store_memory_mb: int | None = Field(
        2048, ge=78, description="object store of a local Ray, MiB (None: Ray's 30% of RAM)"
    )
    include_dashboard: bool = Field(True, description="start the dashboard with a local Ray (127.0.0.1)")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="dashboard port of a local Ray")
    namespace: str = Field("socialalign", description="Ray namespace for named actors")
    log_to_driver: bool = Field(True, description="print the output of Ray's workers here (it is also in Ray's logs)")

    @field_validator("address")
    @classmethod
    def _known_address(cls, value: str) -> str:
        if not _RAY_ADDRESS.match(value.strip()):
            raise ValueError("expected local, auto, ray://HOST:PORT, HOST:PORT or http://HOST:8265")
        return value.strip()


class StageConfig(StrictModel):
    """Fields every stage has."""

    ray: RayConfig = Field(default_factory=RayConfig)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = from_env(
        "SOCIALALIGN_LOG_LEVEL", "INFO", description="DEBUG | INFO | WARNING | ERROR (any case)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value
