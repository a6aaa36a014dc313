"""What every stage shares: typed config, the Ray connection, logging, the CLI and job submission."""

from cluster.config import ConfigError, dump_config, load_config
from cluster.logs import setup_logging
from cluster.ray_connect import RayInfo, init_ray, ray_session
from cluster.stage_configs import (
    CrawlConfig,
    DatasetConfig,
    DecodingConfig,
    DemoConfig,
    EvaluateConfig,
    LLMEndpointConfig,
    PredictConfig,
    RayConfig,
    ServeConfig,
    StageConfig,
    TrainConfig,
)
from cluster.stages import STAGES

__all__ = [
    "STAGES",
    "ConfigError",
    "CrawlConfig",
    "DatasetConfig",
    "DecodingConfig",
    "DemoConfig",
    "EvaluateConfig",
    "LLMEndpointConfig",
    "PredictConfig",
    "RayConfig",
    "RayInfo",
    "ServeConfig",
    "StageConfig",
    "TrainConfig",
    "dump_config",
    "init_ray",
    "load_config",
    "ray_session",
    "setup_logging",
]
