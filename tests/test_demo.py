"""`socialalign demo --size smoke` end to end, as a new user runs it, and every artifact it leaves."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.parquet import read_table_dir
from cluster.schemas import CASES, CLEAN_HISTORY, CRAWL_TABLES, PERSONAS, PREDICTIONS, RETRIEVAL, SFT, TRUTH

REPO = Path(__file__).resolve().parents[1]
TRUTH_METHODS = ("zero-shot", "pac-lora", "history-baseline", "oracle")
BENCHMARK = "bench/quality.py and docs/evaluation.md#quality-benchmark"


# The demo runs as a subprocess, longer than the suite's per-test limit; it bounds itself.
pytestmark = pytest.mark.timeout(1000)


# What must never reach the demo's screen: log records, Ray's C++ core lines (`core_worker.cc:123`),
# lines forwarded from Ray workers (`(Actor pid=1)`), Python warnings and tracebacks.
STRAY = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|\.cc:\d+|\(\w+ pid=\d+|Warning:|Traceback")


def demo_command(out: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "socialalign"), "demo", "--size", "smoke", "--out", str(out),
            "ray.include_dashboard=false"]


def demo_env() -> dict[str, str]:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


def run_demo(out: Path) -> tuple[str, str]:
    """The demo with its output piped (a log file or CI): (stdout, stderr)."""
    result = subprocess.run(demo_command(out), cwd=REPO, env=demo_env(), capture_output=True, text=True, timeout=900)
    output = (result.stdout + result.stderr).replace("\r", "\n")
    assert result.returncode == 0, output[-4000:] + _log_tail(out)
    return result.stdout, result.stderr


def run_demo_in_a_terminal(out: Path) -> str:
    """The demo as a user sees it in a terminal (a pseudo-terminal): everything it draws, bars included."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(demo_command(out), cwd=REPO, env=demo_env(), stdin=follower, stdout=follower,
                               stderr=follower, close_fds=True)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 900
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the demo closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-4000:] + _log_tail(out)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _log_tail(out: Path) -> str:
    log = out / "logs" / "demo.log"
    return "\n--- demo.log ---\n" + log.read_text(encoding="utf-8")[-6000:] if log.is_file() else ""


def stray_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if STRAY.search(line)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout, stderr = run_demo(out)
    assert stray_lines(stdout + stderr) == []
    return out, stdout


def printed_rows(stdout: str) -> dict[str, int]:
    line = next(line for line in stdout.splitlines() if line.strip().startswith("rows:"))
    pairs = (item.rsplit(" ", 1) for item in line.split(":", 1)[1].split(","))
    return {name.strip(): int(count) for name, count in pairs}


def test_every_stage_reports_and_the_summary_is_printed(demo) -> None:
    _, stdout = demo
    for stage in ("ray", "crawl", "build-dataset", "base model", "train", "serve", "evaluate", "truth"):
        assert f"[{stage:<13}] ok" in stdout, stage
    for line in ("rows:", "training:   loss", "serving:", "macro JS:", "held out:", "adapter:", "report:"):
        assert line in stdout
    assert ", 0 rate-limit violations" in stdout


def printed_truth(stdout: str, figure: str) -> dict[str, float | None]:
    """The summary's figures against the truth, in the lines after `held out:`:
    `              micro macro-F1 zero-shot 0.244, pac-lora ...`."""
    block = stdout.split("  held out:", 1)[1].splitlines()[1:]
    line = next(line for line in block if line.strip().startswith(figure))
    pairs = (item.strip().rsplit(" ", 1) for item in line.strip().removeprefix(figure).split(","))
    return {method: None if value == "n/a" else float(value) for method, value in pairs}


def test_the_summary_names_the_four_methods_against_the_truth_and_points_to_the_benchmark(demo) -> None:
    out, stdout = demo
    report = json.loads((out / "report-truth" / "_SUCCESS.json").read_text(encoding="utf-8"))["report"]
    held_out = set(read_table_dir(out / "dataset" / "sft" / "test", SFT)["topic"].to_pylist())
    summary = stdout.split("SocialAlign demo finished", 1)[1]
    assert f"held out:   #{held_out.pop()}#" in summary and "labelled by simulator-lexicon" in summary
    for printed, figure in (("micro macro-F1", "sentiment_macro_f1"), ("macro JS", "js")):
        shown = printed_truth(summary, printed)
        assert tuple(shown) == TRUTH_METHODS
        for method, value in shown.items():
            expected = report["methods"][method][figure]
            assert value == (None if expected is None else round(expected, 3)), (printed, method)
        assert shown["oracle"] is not None and shown["history-baseline"] is not None
    assert "too small to show" in summary and BENCHMARK in summary
    assert (REPO / "bench" / "quality.py").is_file()
    assert "## Quality benchmark" in (REPO / "docs" / "evaluation.md").read_text(encoding="utf-8")


def test_the_truth_is_the_crawled_worlds_and_the_oracle_writes_every_held_out_post_again(demo) -> None:
    out, _ = demo
    test = read_table_dir(out / "dataset" / "sft" / "test", SFT)
    truth = pq.read_table(out / "truth" / "truth.parquet")
    assert truth.schema.equals(TRUTH)
    assert set(truth["topic"].to_pylist()) == set(test["topic"].to_pylist())
    assert set(test["mid"].to_pylist()) <= set(truth["mid"].to_pylist())  # every case's real post has its truth
    oracle = pq.read_table(out / "truth" / "oracle.parquet")
    assert oracle.schema.names == PREDICTIONS.names and oracle.num_rows == 5 * test.num_rows
    assert set(oracle["method"].to_pylist()) == {"oracle"}
    assert sorted(set(oracle["mid"].to_pylist())) == sorted(test["mid"].to_pylist())
    report = json.loads((out / "report-truth" / "_SUCCESS.json").read_text(encoding="utf-8"))["report"]
    assert report["labeler"] == "simulator-lexicon"
    assert report["truth"]["labeller_vs_truth"]["accuracy"] == 1.0  # the truth-aware labeller on the real posts
    assert set(TRUTH_METHODS) <= set(report["methods"])
    for method in TRUTH_METHODS:
        assert report["methods"][method]["sentiment_macro_f1"] is not None, method
    assert report["methods"]["oracle"]["predictions"] == oracle.num_rows
    assert (out / "report-truth" / "report.md").is_file()
    # the demo's own evaluation keeps its default labeller and the labelled real posts
    assert json.loads((out / "report" / "_SUCCESS.json").read_text(encoding="utf-8"))["report"]["labeler"] != \
        "simulator-lexicon"


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


def test_the_printed_row_counts_are_the_tables_row_counts(demo) -> None:
    out, stdout = demo
    rows = printed_rows(stdout)
    for name, schema in CRAWL_TABLES.items():
        assert rows[f"crawl/{name}"] == read_table_dir(out / "crawl" / name, schema).num_rows, name
    clean = read_table_dir(out / "dataset" / "clean" / "history", CLEAN_HISTORY)
    assert rows["dataset/clean_history"] == clean.num_rows
    assert rows["dataset/cases"] == read_table_dir(out / "dataset" / "clean" / "cases", CASES).num_rows
    assert rows["dataset/personas"] == read_table_dir(out / "dataset" / "personas", PERSONAS).num_rows
    assert rows["sft/train"] == read_table_dir(out / "dataset" / "sft" / "train", SFT).num_rows
    assert rows["sft/test"] == read_table_dir(out / "dataset" / "sft" / "test", SFT).num_rows
    assert read_table_dir(out / "dataset" / "retrieval", RETRIEVAL).num_rows == rows["dataset/cases"]


def test_training_reported_its_losses(demo) -> None:
    # Not "the loss fell": the base model has read these posts, so a few smoke steps move the loss
    # less than one batch differs from the next (the small demo's 60 steps do lower it).
    _, stdout = demo
    line = next(line for line in stdout.splitlines() if line.strip().startswith("training:"))
    first, last = (float(value) for value in line.split("loss", 1)[1].split("->"))
    assert 0 < last < 20 and 0 < first < 20


def test_the_evaluation_tables_are_well_formed(demo) -> None:
    out, _ = demo
    summary = pq.read_table(out / "report" / "summary.parquet").to_pylist()
    assert {row["method"] for row in summary} == {"pac-lora", "zero-shot"}
    macro = pq.read_table(out / "report" / "macro.parquet").to_pylist()
    assert macro and all(row["topic"] for row in macro)


def test_the_screen_holds_stage_lines_and_the_summary_and_the_log_the_rest(demo) -> None:
    out, stdout = demo
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert all(line.startswith("[") or line.startswith("  ") or line.startswith("SocialAlign demo") for line in lines)
    log = (out / "logs" / "demo.log").read_text(encoding="utf-8")
    assert " INFO " in log and "[crawl        ] ok" in log  # our records and the stage lines went there
    assert f"logs:       {out / 'logs' / 'demo.log'}" in stdout or "logs/demo.log" in stdout


def test_a_rerun_in_a_terminal_reuses_every_finished_stage_and_draws_nothing_stray(demo) -> None:
    out, first = demo
    again = run_demo_in_a_terminal(out)
    assert stray_lines(again) == []
    assert "[base model   ] reused" in again
    assert "[serve        ] reused" in again and "[evaluate     ] reused" in again
    assert "[truth        ] reused" in again
    assert printed_rows(again) == printed_rows(first)  # the crawl resumed: nothing fetched twice
