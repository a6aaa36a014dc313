"""Crawl output: workers flush staging part files; `finalize` merges them into the crawl tables.

Exactly-once without distributed transactions: a task is marked done only after the part file
holding its rows has been renamed into place, so no row is lost; a task that ran twice (its worker
died between the rename and the mark) leaves two copies of the same keyed rows, and `finalize`
keeps one per primary key. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.parquet import atomic_write_parquet, read_parts, read_table_dir, write_table_dir
from cluster.schemas import (
    CRAWL_TABLES,
    ERRORS,
    HISTORY,
    LONG_TEXTS,
    POSTS,
    PRIMARY_KEYS,
    REGIONS,
    STRINGS,
    TOPICS,
    USERS,
)

log = logging.getLogger(__name__)

# What workers write: the final tables plus pieces that finalize folds into them.
STAGING: dict[str, pa.Schema] = {
    "topics": TOPICS,
    "posts": POSTS,
    "users": USERS,
    "user_details": USERS,
    "history": HISTORY,
    "long_texts": LONG_TEXTS,
    # Every picture of a post with more than 9 (a timeline lists 9), from its detail page: history rows
    # of which only user_id, mid, text and pics are filled; finalize takes their pics.
    "pictures": HISTORY,
    "regions": REGIONS,
    "errors": ERRORS,
}
PARTS_DIR = "_parts"
DETAIL_FIELDS = ("birthday", "location", "education", "company", "registered", "sunshine_credit", "ip_region")
HISTORY_ROWS_PER_FILE = 200_000


class PartWriter:
    """Buffers rows per staging table and writes them as one new part file per table on flush."""

    def __init__(self, output_dir: str | os.PathLike[str], writer_id: str) -> None:
        self.root = Path(output_dir) / PARTS_DIR
        self.prefix = f"{writer_id}-{secrets.token_hex(4)}"
        self.sequence = 0
        self.buffers: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, table: str, rows: list[dict[str, Any]]) -> None:
        if table not in STAGING:
            raise ValueError(f"unknown staging table {table!r}")
        now = datetime.now(timezone.utc)
        self.buffers[table].extend({**row, "crawled_at": row.get("crawled_at") or now} for row in rows)

    @property
    def buffered(self) -> int:
        return sum(len(rows) for rows in self.buffers.values())

    def take(self) -> dict[str, list[dict[str, Any]]]:
        """Hand over the buffered rows (to write them elsewhere, e.g. in a thread) and start afresh."""
        batch, self.buffers = dict(self.buffers), defaultdict(list)
        return batch

    def flush(self, batch: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, int]:
        """Write the buffered (or given) rows, one part file per table; rows that do not fit the
        schema become error rows instead."""
        batch = self.take() if batch is None else batch
        written: dict[str, int] = {}
        rejects: list[dict[str, Any]] = []
        for table, rows in batch.items():
            if not rows:
                continue
            arrow, bad = _to_arrow(rows, STAGING[table])
            rejects.extend(_reject_row(table, row, error) for row, error in bad)
            if arrow.num_rows:
                self._write(table, arrow)
                written[table] = arrow.num_rows
        if rejects:
            arrow, _ = _to_arrow(rejects, ERRORS)
            self._write("errors", arrow)
            written["errors"] = written.get("errors", 0) + arrow.num_rows
        return written

    def _write(self, table: str, arrow: pa.Table) -> None:
        directory = self.root / table
        directory.mkdir(parents=True, exist_ok=True)
        self.sequence += 1
        atomic_write_parquet(arrow, directory / f"{self.prefix}-{self.sequence:06d}.parquet")


@dataclass(frozen=True)
class FinalCounts:
    rows: dict[str, int]
    skipped_parts: list[str]


def finalize(output_dir: str | os.PathLike[str]) -> FinalCounts:
    """Merge all staging parts into `<output>/<table>/` for topics, posts, users, history and errors.

    When no part changed since the last merge, the tables are left as they are (their files keep
    their times, so later stages see that nothing changed)."""
    output_dir = Path(output_dir)
    manifest = output_dir / PARTS_DIR / "_merged.json"
    parts = _parts_listing(output_dir / PARTS_DIR)
    previous = _read_json(manifest)
    if previous.get("parts") == parts and all((output_dir / name).is_dir() for name in CRAWL_TABLES):
        return FinalCounts(previous["rows"], previous.get("skipped", []))
    skipped: list[str] = []
    staged = {name: read_parts(output_dir / PARTS_DIR / name, schema, skipped) for name, schema in STAGING.items()}
    tables = {
        "topics": _final_topics(staged["topics"]),
        "posts": _final_posts(staged["posts"], staged["regions"]),
        "users": _final_users(staged["users"], staged["user_details"]),
        "history": _final_history(staged["history"], staged["long_texts"], staged["pictures"]),
        "errors": staged["errors"],
    }
    for name, table in tables.items():
        write_table_dir(output_dir / name, _files_for(name, table.cast(CRAWL_TABLES[name])))
    rows = {name: table.num_rows for name, table in tables.items()}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"parts": parts, "rows": rows, "skipped": skipped}))
    return FinalCounts(rows, skipped)


def _parts_listing(root: Path) -> list[list[Any]]:
    if not root.is_dir():
        return []
    return sorted([str(path.relative_to(root)), path.stat().st_size] for path in root.rglob("*.parquet"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_table(output_dir: str | os.PathLike[str], name: str) -> pa.Table:
    """A finalized crawl table (empty with its schema when the crawl produced none)."""
    return read_table_dir(Path(output_dir) / name, CRAWL_TABLES[name])


def _latest(table: pa.Table, keys: tuple[str, ...], rank: pa.Array | None = None) -> pa.Table:
    """One row per key: the highest `rank`, then the latest crawled_at."""
    if table.num_rows == 0:
        return table
    order = [("__rank", "ascending")] if rank is not None else []
    indexed = table.append_column("__rank", rank) if rank is not None else table
    indexed = indexed.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    ordered = indexed.sort_by([*order, ("crawled_at", "ascending"), ("__row", "ascending")])
    ordered = ordered.append_column("__pos", pa.array(range(ordered.num_rows), pa.int64()))
    last = ordered.group_by(list(keys), use_threads=False).aggregate([("__pos", "max")])
    chosen = ordered.take(last["__pos_max"])
    return chosen.drop_columns([c for c in ("__rank", "__row", "__pos") if c in chosen.column_names])


def _final_topics(topics: pa.Table) -> pa.Table:
    rank = pc.equal(topics["source"], "ai_search").cast(pa.int8()) if topics.num_rows else None
    return _sorted(_latest(topics, PRIMARY_KEYS["topics"], rank), ["topic"])


def _final_posts(posts: pa.Table, regions: pa.Table) -> pa.Table:
    rank = pc.equal(posts["found_by"], "search").cast(pa.int8()) if posts.num_rows else None
    posts = _latest(posts, PRIMARY_KEYS["posts"], rank)
    regions = _latest(regions, ("bid",))
    if posts.num_rows and regions.num_rows:
        found = dict(zip(regions["bid"].to_pylist(), regions["region"].to_pylist(), strict=True))
        pairs = zip(posts["bid"].to_pylist(), posts["region"].to_pylist(), strict=True)
        filled = [found.get(bid, own) for bid, own in pairs]
        posts = posts.set_column(posts.schema.get_field_index("region"), "region", pa.array(filled, pa.string()))
    return _sorted(posts, ["query", "mid"])


def _final_users(users: pa.Table, details: pa.Table) -> pa.Table:
    users = _latest(users, ("user_id",))
    details = _latest(details, ("user_id",))
    if users.num_rows and details.num_rows:
        by_user = {row["user_id"]: row for row in details.select(["user_id", *DETAIL_FIELDS]).to_pylist()}
        for name in DETAIL_FIELDS:
            merged = [by_user.get(uid, {}).get(name) for uid in users["user_id"].to_pylist()]
            users = users.set_column(users.schema.get_field_index(name), name, pa.array(merged, pa.string()))
    return _sorted(users, ["user_id"])


def _final_history(history: pa.Table, long_texts: pa.Table, pictures: pa.Table) -> pa.Table:
    history = _latest(history, PRIMARY_KEYS["history"])
    long_texts = _latest(long_texts, ("mid",))
    pictures = _latest(pictures, ("mid",))
    if history.num_rows and pictures.num_rows:
        every = dict(zip(pictures["mid"].to_pylist(), pictures["pics"].to_pylist(), strict=True))
        pairs = zip(history["mid"].to_pylist(), history["pics"].to_pylist(), strict=True)
        filled = [every.get(mid) or own for mid, own in pairs]
        history = history.set_column(history.schema.get_field_index("pics"), "pics", pa.array(filled, STRINGS))
    if history.num_rows and long_texts.num_rows:
        full = {row["mid"]: row for row in long_texts.to_pylist()}
        mids = history["mid"].to_pylist()
        for name, kind in (("text", pa.string()), ("topics", STRINGS), ("at_users", STRINGS)):
            pairs = zip(mids, history[name].to_pylist(), strict=True)
            values = [full[mid][name] if mid in full else own for mid, own in pairs]
            history = history.set_column(history.schema.get_field_index(name), name, pa.array(values, kind))
    return _sorted(history, ["user_id", "mid"])


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(key, "ascending") for key in keys]) if table.num_rows else table


def _files_for(name: str, table: pa.Table) -> dict[str, pa.Table]:
    """How a table is split into files: posts one file per topic, history by user hash buckets."""
    if name == "posts" and table.num_rows:
        queries = sorted(set(table["query"].to_pylist()))
        return {
            f"query-{zlib.crc32(q.encode()):08x}.parquet": table.filter(pc.equal(table["query"], q)) for q in queries
        }
    if name == "history" and table.num_rows > HISTORY_ROWS_PER_FILE:
        buckets = -(-table.num_rows // HISTORY_ROWS_PER_FILE)
        ids = table["user_id"].to_pylist()
        bucket = pa.array([zlib.crc32(uid.encode()) % buckets for uid in ids], pa.int32())
        return {f"bucket-{b:03d}.parquet": table.filter(pc.equal(bucket, b)) for b in range(buckets)}
    return {"part-000.parquet": table}


def _to_arrow(rows: list[dict[str, Any]], schema: pa.Schema) -> tuple[pa.Table, list[tuple[dict[str, Any], str]]]:
    names = schema.names
    try:
        return pa.Table.from_pylist([{n: row.get(n) for n in names} for row in rows], schema=schema), []
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        good, bad = [], []
        for row in rows:
            try:
                pa.Table.from_pylist([{n: row.get(n) for n in names}], schema=schema)
                good.append({n: row.get(n) for n in names})
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
                bad.append((row, str(error)))
        return pa.Table.from_pylist(good, schema=schema), bad


def _reject_row(table: str, row: dict[str, Any], error: str) -> dict[str, Any]:
    return {
        "url": str(row.get("url") or ""),
        "task": table,
        "kind": "parse",
        "status": None,
        "snippet": repr({k: v for k, v in row.items() if k != "crawled_at"})[:200],
        "message": f"row does not fit the {table} schema: {error}",
        "time": datetime.now(timezone.utc),
    }
