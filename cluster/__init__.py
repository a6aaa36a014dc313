"""The foundation every stage stands on (typed config, the Ray connection, logs, Parquet tables and
their schemas, reports, metrics, the LLM client and the retry policy), and above the stages the
entry layer (`socialalign` CLI, stage registry, job submission, demo, k8s checks), which knows the
stages only by module name. See docs/architecture.md.
"""

from cluster.config import ConfigError, dump_config, load_config
from cluster.logs import setup_logging
from cluster.ray_connect import RayInfo, init_ray, ray_session
from cluster.stage_config import RayConfig, StageConfig

__all__ = [
    "ConfigError",
    "RayConfig",
    "RayInfo",
    "StageConfig",
    "dump_config",
    "init_ray",
    "load_config",
    "ray_session",
    "setup_logging",
]
