"""Evaluation: micro and macro metrics, and reports with plots, of posts labelled by serve's labellers.

`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`.
"""

from serve.evaluate.metrics import distribution, macro_metrics, micro_metrics

__all__ = ["distribution", "macro_metrics", "micro_metrics"]
