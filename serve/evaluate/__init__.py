"""Evaluation: micro and macro metrics, and reports with plots, of posts labelled by serve's labellers.

`socialalign evaluate --predictions a.parquet [--predictions b.parquet ...]`; with `truth` (a
simulator run) against the true sentiments and stances, with `dataset` the history baseline too;
`combine_runs` puts several evaluations (seeds) side by side with their spread.
"""

from serve.evaluate.metrics import distribution, macro_f1, macro_metrics, micro_metrics, spearman
from serve.evaluate.runs import combine_runs

__all__ = ["combine_runs", "distribution", "macro_f1", "macro_metrics", "micro_metrics", "spearman"]
