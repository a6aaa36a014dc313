"""Prediction files as evaluation reads them: `socialalign predict`'s Parquet, checked column by column."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.config import ConfigError
from cluster.schemas import PREDICTIONS


class PredictionsError(ConfigError):
    """A prediction file that cannot be evaluated, and why."""


def load_predictions(path: Path) -> pa.Table:
    """A prediction file or directory, checked: readable Parquet, the columns predict writes, rows."""
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not path.exists():
        raise PredictionsError(f"{path}: no such prediction file")
    if not files:
        raise PredictionsError(f"{path}: no Parquet files in this directory")
    pieces = []
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowInvalid, OSError) as error:
            raise PredictionsError(f"{file}: not a readable Parquet file ({error})") from None
        missing = [name for name in PREDICTIONS.names if name not in table.column_names]
        required = {field.name for field in PREDICTIONS if not field.nullable}
        if missing_required := sorted(set(missing) & required):
            raise PredictionsError(f"{file}: missing column(s) {missing_required} (write it with socialalign predict)")
        for name in missing:
            table = table.append_column(name, pa.nulls(table.num_rows, PREDICTIONS.field(name).type))
        try:
            pieces.append(table.select(PREDICTIONS.names).cast(PREDICTIONS))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise PredictionsError(f"{file}: a column has the wrong type ({error})") from None
    table = pa.concat_tables(pieces)
    if table.num_rows == 0:
        raise PredictionsError(f"{path}: holds no predictions")
    return table
