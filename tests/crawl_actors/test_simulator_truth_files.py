"""`python -m crawl_actors.simulator ... --write-truth DIR`: the world's truth and its oracle as Parquet,
for the demo, which knows the simulator only as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.schemas import PREDICTIONS, SFT, TRUTH
from crawl_actors.simulator import SimulatorConfig, oracle_predictions, truth_table
from crawl_actors.simulator.__main__ import main
from crawl_actors.simulator.lexicon import TOPIC_TEMPLATES

REPO = Path(__file__).resolve().parents[2]
ARGUMENTS = ["--seed", "3", "--users", "20", "--history", "5", "10", "--hot-topic-posts", "30", "--topic-posts", "12"]
WORLD = SimulatorConfig(seed=3, num_users=20, history_posts=(5, 10), hot_topic_posts=30, topic_posts=12)


def held_out() -> str:
    return truth_table(WORLD)["topic"].to_pylist()[-1]


def write_cases(directory: Path, rows: list[dict], variants: tuple[str, ...] = ("full", "without_history")) -> Path:
    """An SFT split as build-dataset writes it (a directory of parts), one row per truth row and variant."""
    cases = [{"id": f"{r['topic']}|{r['user_id']}|{r['mid']}|{v}", "split": "test", "variant": v, "topic": r["topic"],
              "news": "新闻", "user_id": r["user_id"], "mid": r["mid"], "instruction": "写一条微博", "input": "",
              "output": f"真实的帖子 {r['mid']}", "user_part": "", "news_part": "", "instruction_part": ""}
             for r in rows for v in variants]
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(cases, schema=SFT), directory / "part-0.parquet")
    return directory


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    main([*ARGUMENTS, *argv])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_it_writes_the_worlds_truth_and_the_oracle_of_the_full_variant_cases(tmp_path, capsys) -> None:
    topic = held_out()
    expected_truth = truth_table(WORLD, topics=[topic])
    sft = write_cases(tmp_path / "sft" / "test", expected_truth.to_pylist())
    out = tmp_path / "truth"
    written = run_main(["--write-truth", str(out), "--truth-topic", f"#{topic}#", "--oracle-cases", str(sft),
                        "--oracle-samples", "3", "--oracle-seed", "2"], capsys)

    truth = pq.read_table(out / "truth.parquet")
    assert truth.schema.equals(TRUTH) and truth.equals(expected_truth)
    assert truth.num_rows > 0 and set(truth["topic"].to_pylist()) == {topic}

    full = [row for row in pq.read_table(sft).to_pylist() if row["variant"] == "full"]
    oracle = pq.read_table(out / "oracle.parquet")
    assert oracle.schema.equals(PREDICTIONS)
    assert oracle.equals(oracle_predictions(WORLD, full, samples=3, seed=2))
    assert oracle.num_rows == 3 * truth.num_rows
    assert set(oracle["variant"].to_pylist()) == {"full"} and set(oracle["method"].to_pylist()) == {"oracle"}
    assert set(oracle["mid"].to_pylist()) == set(truth["mid"].to_pylist())
    assert written == {"truth": str(out / "truth.parquet"), "truth_rows": truth.num_rows,
                       "oracle": str(out / "oracle.parquet"), "oracle_rows": oracle.num_rows}


def test_without_topics_or_cases_it_writes_every_topics_truth_only(tmp_path, capsys) -> None:
    written = run_main(["--write-truth", str(tmp_path)], capsys)
    assert pq.read_table(tmp_path / "truth.parquet").equals(truth_table(WORLD))
    assert not (tmp_path / "oracle.parquet").exists() and "oracle" not in written


def test_the_command_builds_the_world_its_arguments_serve(tmp_path) -> None:
    """As the demo runs it: a process of its own, the crawl's world arguments, one JSON line."""
    command = [sys.executable, "-m", "crawl_actors.simulator", *ARGUMENTS, "--write-truth", str(tmp_path)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["truth_rows"] == pq.read_table(tmp_path / "truth.parquet").num_rows
    assert pq.read_table(tmp_path / "truth.parquet").equals(truth_table(WORLD))
    assert command[3:5] == ["--seed", "3"]  # another seed, another world: another truth
    other = subprocess.run([*command[:4], "4", *command[5:]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert not pq.read_table(tmp_path / "truth.parquet").equals(truth_table(WORLD))


def bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    topic = held_out()
    rows = truth_table(WORLD, topics=[topic]).to_pylist()
    first_topic = truth_table(WORLD)["topic"].to_pylist()[0]
    other_world = truth_table(SimulatorConfig(seed=4, num_users=20, history_posts=(5, 10), hot_topic_posts=30,
                                              topic_posts=12, num_topics=len(TOPIC_TEMPLATES)),  # every topic
                              topics=[first_topic]).to_pylist()
    return {
        "unknown topic": (["--truth-topic", "没有这个话题"], "没有这个话题"),
        "no cases": (["--oracle-cases", str(tmp_path / "missing")], "no such file or directory"),
        "empty split": (["--oracle-cases", str(_mkdir(tmp_path / "empty"))], "no cases in it"),
        "not parquet": (["--oracle-cases", str(_text(tmp_path / "cases.parquet"))], "not an SFT Parquet file"),
        "another variant only": (["--oracle-cases", str(write_cases(tmp_path / "wh", rows, ("without_history",)))],
                                 "no rows of prompt variant 'full'"),
        "cases of another world": (["--truth-topic", first_topic,
                                    "--oracle-cases", str(write_cases(tmp_path / "other", other_world))],
                                   "not a post of that user in the simulator"),
        "cases outside the truth's topics": (["--truth-topic", first_topic,
                                              "--oracle-cases", str(write_cases(tmp_path / "held", rows))],
                                             "outside the truth's topics"),
        "no --write-truth": (["--oracle-cases", str(tmp_path)], "go with --write-truth"),
        "zero samples": (["--oracle-samples", "0"], "expected an integer >= 1"),
    }


@pytest.mark.parametrize("case", ["unknown topic", "no cases", "empty split", "not parquet", "another variant only",
                                  "cases of another world", "cases outside the truth's topics", "no --write-truth",
                                  "zero samples"])
def test_bad_input_is_a_usage_error_naming_it_and_writes_nothing(tmp_path, capsys, case) -> None:
    argv, message = bad_cases(tmp_path)[case]
    out = tmp_path / "out"
    write = [] if case == "no --write-truth" else ["--write-truth", str(out)]
    with pytest.raises(SystemExit) as stopped:
        main([*ARGUMENTS, *write, *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _text(path: Path) -> Path:
    path.write_text("not parquet")
    return path


@pytest.mark.parametrize("page", ["demo.md", "crawl.md"])
def test_the_docs_write_truth_commands_parse(page: str) -> None:
    """docs/demo.md shows the command as the demo runs it, docs/crawl.md among the simulator's commands;
    tests/test_docs.py leaves the simulator's to us."""
    from crawl_actors.simulator.__main__ import _parser

    text = (REPO / "docs" / page).read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.split("  #")[0].strip() for line in text.splitlines()
             if line.strip().startswith("python -m crawl_actors.simulator") and "--write-truth" in line]
    assert lines
    for line in lines:
        args = _parser().parse_args(line.split()[3:])
        assert args.write_truth is not None
