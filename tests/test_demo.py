"""`socialalign demo --size smoke` end to end, as a new user runs it, and every artifact it leaves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.parquet import read_table_dir
from cluster.schemas import CRAWL_TABLES, PREDICTIONS, SFT

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "socialalign"), "demo", "--size", "smoke", "--out", str(out),
         "ray.include_dashboard=false"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    output = (result.stdout + result.stderr).replace("\r", "\n")
    assert result.returncode == 0, output[-4000:]
    return out, result.stdout


def test_every_stage_reports_and_the_summary_is_printed(demo) -> None:
    _, stdout = demo
    for stage in ("ray", "crawl", "build-dataset", "base model", "train", "serve", "evaluate"):
        assert f"[{stage:<13}] ok" in stdout, stage
    for line in ("rows:", "training:   loss", "serving:", "macro JS:", "adapter:", "report:"):
        assert line in stdout
    assert ", 0 rate-limit violations" in stdout


def test_crawl_and_dataset_tables_are_well_formed(demo) -> None:
    out, _ = demo
    for name, schema in CRAWL_TABLES.items():
        table = read_table_dir(out / "crawl" / name, schema)
        assert table.schema.names == schema.names
        assert (table.num_rows == 0) if name == "errors" else (table.num_rows > 0), name
    train = read_table_dir(out / "dataset" / "sft" / "train", SFT)
    test = read_table_dir(out / "dataset" / "sft" / "test", SFT)
    assert train.num_rows and test.num_rows
    assert len(set(test["topic"].to_pylist())) == 1  # one held-out topic
    assert not set(train["topic"].to_pylist()) & set(test["topic"].to_pylist())


def test_the_model_and_the_adapter_load(demo) -> None:
    from pac_lora import load_adapter, load_base_model

    out, _ = demo
    base, tokenizer = load_base_model(out / "model")
    model = load_adapter(base, out / "train" / "demo" / "adapter")
    assert model.pac_config.routing == "sequence"
    assert tokenizer.chat_template


def test_predictions_and_the_report(demo) -> None:
    out, _ = demo
    tests = read_table_dir(out / "dataset" / "sft" / "test", SFT).num_rows
    for method in ("pac-lora", "zero-shot"):
        table = pq.read_table(out / "predictions" / f"{method}.parquet")
        assert table.schema.names == PREDICTIONS.names and table.num_rows == tests
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "| pac-lora |" in report and "| zero-shot |" in report
    plots = sorted((out / "report").glob("*.png"))
    assert {p.name for p in plots} == {"distribution-T1.png", "methods.png"}
    for plot in plots:
        with Image.open(plot) as image:
            assert image.size == (800, 450)
