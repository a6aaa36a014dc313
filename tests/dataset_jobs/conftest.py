"""Crawl tables written from the Weibo simulator's ground truth: what a finished crawl leaves on disk."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from cluster.parquet import atomic_write_parquet
from cluster.schemas import CRAWL_TABLES
from crawl_actors.simulator import SimulatorConfig, WeiboSimulator


@pytest.fixture(scope="session")
def simulator() -> WeiboSimulator:
    return WeiboSimulator(SimulatorConfig(seed=3, num_users=30, history_posts=(8, 40), hot_topic_posts=60,
                                          topic_posts=30, num_topics=4))


@pytest.fixture(scope="session")
def crawl_dir(simulator: WeiboSimulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crawl")
    write_crawl(simulator.ground_truth(), root)
    return root


def write_crawl(truth: dict, root: Path) -> None:
    now = datetime.now(timezone.utc)
    for name in ("topics", "posts", "users", "history"):
        schema = CRAWL_TABLES[name]
        rows = [{**{field: row.get(field) for field in schema.names}, "crawled_at": now} for row in truth[name]]
        (root / name).mkdir(parents=True, exist_ok=True)
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=schema), root / name / "part-000.parquet")
