"""Parquet directories as Ray Datasets, the way every step reads and writes them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def read_dataset(directory: Path, schema: pa.Schema) -> Any:
    """A Ray Dataset over the readable Parquet files of `directory`; unreadable ones are named and left out."""
    import ray

    files, bad = [], []
    for path in sorted(directory.rglob("*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            pq.read_metadata(path)
            files.append(str(path))
        except (pa.ArrowInvalid, OSError) as error:
            bad.append(f"{path}: {error}")
    for problem in bad:
        log.error("left out an unreadable input file: %s", problem)
    if not files:
        return ray.data.from_arrow(schema.empty_table())
    # Ray Data splits any read into at least 200 blocks (read_op_min_num_blocks): for our small per-user
    # tables that is hundreds of tasks per step and per shuffle, so ask for what the files and CPUs use.
    return ray.data.read_parquet(files, schema=schema, override_num_blocks=max(len(files), partitions()))


def write_dataset(dataset: Any, directory: Path, schema: pa.Schema) -> None:
    """Write in parallel from the workers, every block in the declared schema (into a fresh directory
    that `replace_dir` swaps in)."""
    dataset.map_batches(_conform, batch_format="pyarrow", fn_kwargs={"schema": schema}).write_parquet(str(directory))
    directory.mkdir(parents=True, exist_ok=True)


def _conform(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    return batch.select(schema.names).cast(schema)


def partitions() -> int:
    """Shuffle partitions: enough for every CPU, few enough that small data is not scattered thin."""
    import ray

    return max(1, min(16, int(ray.cluster_resources().get("CPU", 1))))


def shared(value: Any) -> Any:
    """A value handed to a Ray task through the object store (`ray.put`), or as itself in a direct call."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value
