"""Evaluation: sentiment labellers, micro and macro metrics, and reports with plots.

`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.
"""

from serve.evaluate.labelers import LLMJudgeLabeler, OfflineLabeler, parse_judgement
from serve.evaluate.metrics import CLASSES, distribution, macro_metrics, micro_metrics

__all__ = [
    "CLASSES",
    "LLMJudgeLabeler",
    "OfflineLabeler",
    "distribution",
    "macro_metrics",
    "micro_metrics",
    "parse_judgement",
]
