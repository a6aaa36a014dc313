"""Parquet on disk, the way every stage writes it: atomically, and readable with its declared schema."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `directory` durable: a rename is a change to the directory, and
    until the directory itself is fsynced a power cut can undo it (POSIX; a no-op where directories
    cannot be opened, as on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_parquet(table: pa.Table, path: Path) -> None:
    """Write to a temporary name in the same directory, fsync, rename, fsync the directory: readers
    never see half a file, and once this returns the file is on disk under its name."""
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    pq.write_table(table, temp)
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def replace_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Build a new directory with `fill(new_dir)`, then swap it in for `target` (old one removed)."""
    fresh = target.with_name(f".{target.name}.new-{secrets.token_hex(4)}")
    fresh.mkdir(parents=True)
    try:
        fill(fresh)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    if target.exists():
        os.replace(target, old)
    os.replace(fresh, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_table_dir(target: Path, files: dict[str, pa.Table]) -> None:
    """Replace the directory `target` with these files, atomically as a whole."""

    def fill(directory: Path) -> None:
        for filename, table in files.items():
            atomic_write_parquet(table, directory / filename)

    replace_dir(target, fill)


def read_table_dir(directory: Path, schema: pa.Schema) -> pa.Table:
    """Every Parquet file under `directory` as one table of `schema` (empty when there is none)."""
    if not directory.is_dir():
        return schema.empty_table()
    return ds.dataset(directory, format="parquet", schema=schema).to_table()


def read_parts(directory: Path, schema: pa.Schema, skipped: list[str]) -> pa.Table:
    """Like read_table_dir, but a file that cannot be read is left out (and named in `skipped`)."""
    pieces = []
    for path in sorted(directory.glob("*.parquet")) if directory.is_dir() else []:
        try:
            pieces.append(pq.read_table(path, schema=schema))
        except (pa.ArrowInvalid, OSError) as error:
            log.error("skipping unreadable part %s: %s", path, error)
            skipped.append(str(path))
    return pa.concat_tables(pieces) if pieces else schema.empty_table()
