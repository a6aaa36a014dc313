"""What the libraries under the train stage print, kept off the console unless log_level is DEBUG.

Only chatter goes: every warning and error of the libraries still reaches the console, and what is
held back still reaches the libraries' own log files (Ray Data's ray-data.log) or our DEBUG log.

- Ray Data, on the driver: "Starting execution of Dataset ... / Execution plan of Dataset ..."
  for every dataset (DataContext.print_on_execution_start), and, when output is not a terminal,
  its progress logged as INFO blocks every few seconds (its console handler's level).
- Ray Data, in the actor that splits the rows between the Ray Train workers: progress bars of a
  split that finishes at once (the training set's own DataContext). This leaves one line of Ray
  Data's per run: a WARNING that those bars are disabled.
- DeepSpeed: "Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to
  detect it." in every CPU worker (DS_ACCELERATOR=cpu names the accelerator Ray Train gives it
  anyway), its INFO lines (its logger's level), and "DeepSpeed deepspeed.ops.comm.
  deepspeed_shm_comm_op built successfully", which `deepspeed.initialize` prints (logged at DEBUG).
- torch: a FutureWarning on every collective DeepSpeed calls by its old name; transformers: one when
  peft builds the LoRA baseline (`is_gradient_checkpointing` is deprecated).
- transformers: the "Loading weights" progress bar when a worker loads the base model.
- Ray Train: its line per report (a logger named after its file) and a RayDeprecationWarning its
  own `DataConfig.default_ingest_options` raises (`ExecutionOptions.exclude_resources`).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("train_jobs")


def quiet_ray_data(debug: bool) -> None:
    """Ray Data on the driver, before the training set is read (datasets copy this context)."""
    from ray.data import DataContext

    DataContext.get_current().print_on_execution_start = debug
    if debug:
        return
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; its file handler keeps INFO
            handler.setLevel(logging.WARNING)


def without_split_progress(dataset: Any) -> Any:
    """`dataset` without progress bars where Ray Train splits it between the workers."""
    dataset.context.enable_progress_bars = False
    return dataset


def default_ingest_options(data_config: Any) -> Any:
    """Ray Train's default ingest options, without the deprecation warning its own code raises."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ExecutionOptions\.exclude_resources` is deprecated")
        return data_config.default_ingest_options()


def worker_env(use_gpu: bool) -> dict[str, str]:
    """Environment of the Ray Train workers: a CPU worker's DeepSpeed accelerator named, not guessed."""
    return {} if use_gpu else {"DS_ACCELERATOR": "cpu"}


def quiet_worker_logs(level: str) -> None:
    """DeepSpeed's INFO lines, the deprecation warnings of one library's calls into another,
    transformers' loading bar, and Ray Train's line per report (its logger is named after its file,
    so RunConfig's LoggingConfig does not reach it)."""
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("DeepSpeed").setLevel(quiet)
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if level != "DEBUG":
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(quiet)
    except ImportError:  # a Ray without Train V2's module layout: leave its logging alone
        pass


@contextlib.contextmanager
def prints_logged_at_debug(what: str) -> Iterator[None]:
    """What a library prints to stdout inside the block becomes a DEBUG line of our log. `print`
    itself is swapped, not sys.stdout: Ray Train's workers turn every print into a log record
    whatever stdout is. Prints to stderr, logging, warnings and exceptions are untouched."""
    previous = builtins.print

    def to_debug_log(*objects: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None,
                     flush: bool = False) -> None:
        if file not in (None, sys.stdout):
            previous(*objects, sep=sep, end=end, file=file, flush=flush)
            return
        log.debug("%s: %s", what, (" " if sep is None else sep).join(map(str, objects)))

    builtins.print = to_debug_log
    try:
        yield
    finally:
        builtins.print = previous
