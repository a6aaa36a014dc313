"""`socialalign build-dataset` end to end on Ray Data, from crawl tables to the SFT set: outputs,
resume, persona calls through a local OpenAI-compatible server, and bad input that must not be fatal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from cluster.cli import main
from cluster.config import ConfigError
from cluster.parquet import read_table_dir
from cluster.schemas import CASES, CLEAN_HISTORY, PERSONAS, RETRIEVAL, SFT
from cluster.stage_config import RayConfig
from dataset_jobs.config import DatasetConfig
from dataset_jobs.job import SUCCESS, run
from dataset_jobs.steps.sft import split_topics
from pac_lora import build_prompt, train_tokenizer
from tests.fakes.openai_server import FakeLLM, FakeLLMConfig

REPO = Path(__file__).resolve().parents[2]


def config(crawl_dir: Path, out: Path, **overrides) -> DatasetConfig:
    return DatasetConfig(crawl_dir=crawl_dir, output_dir=out, ray=RayConfig(include_dashboard=False), **overrides)


def report(out: Path, step_dir: str) -> dict:
    return json.loads((out / step_dir / SUCCESS).read_text())["report"]


@pytest.fixture(scope="module")
def built(crawl_dir: Path, tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    out = tmp_path_factory.mktemp("dataset")
    assert run(config(crawl_dir, out)) == 0
    return out


def test_cleaning_reports_every_rule_and_keeps_usable_users(built: Path, simulator) -> None:
    truth = simulator.ground_truth()
    clean = report(built, "clean")
    assert clean["history_rows_in"] == len(truth["history"])
    assert clean["dropped_by_rule"]["target_post"] == len({(p["user_id"], p["mid"]) for p in truth["posts"]})
    assert sum(clean["dropped_by_rule"].values()) + clean["history_rows_kept"] == clean["history_rows_in"]
    history = read_table_dir(built / "clean" / "history", CLEAN_HISTORY)
    per_user = pa.TableGroupBy(history, "user_id").aggregate([("mid", "count")])
    assert min(per_user["mid_count"].to_pylist()) >= 10
    target_mids = {p["mid"] for p in truth["posts"]}
    assert not target_mids & set(history["mid"].to_pylist())


def test_retrieval_picks_the_users_own_earlier_posts(built: Path) -> None:
    history = {row["mid"]: row for row in read_table_dir(built / "clean" / "history", CLEAN_HISTORY).to_pylist()}
    cases = {(c["topic"], c["mid"]): c for c in read_table_dir(built / "clean" / "cases", CASES).to_pylist()}
    picked = read_table_dir(built / "retrieval", RETRIEVAL).to_pylist()
    assert len(picked) == len(cases) > 0
    for row in picked:
        case = cases[(row["topic"], row["mid"])]
        assert 0 < len(row["history_mids"]) <= 5 and row["scores"] == sorted(row["scores"], reverse=True)
        for mid in row["history_mids"]:
            assert history[mid]["user_id"] == case["user_id"]
            assert history[mid]["created_at"] < case["created_at"]


def test_sft_set_has_every_variant_and_a_split_by_topic(built: Path) -> None:
    train = read_table_dir(built / "sft" / "train", SFT)
    test = read_table_dir(built / "sft" / "test", SFT)
    assert train.num_rows and test.num_rows
    assert not set(train["topic"].to_pylist()) & set(test["topic"].to_pylist())
    rows = train.to_pylist() + test.to_pylist()
    per_case = {}
    for row in rows:
        per_case.setdefault((row["topic"], row["mid"]), set()).add(row["variant"])
        assert row["instruction"] == row["user_part"] + row["news_part"] + row["instruction_part"]
        assert row["input"] == "" and row["output"]
    assert all(variants == {"full", "without_persona", "without_history"} for variants in per_case.values())
    full = next(row for row in rows if row["variant"] == "full")
    assert "以下是你的用户画像" in full["user_part"] and full["persona"] in full["user_part"]
    lines = (built / "sft" / "train-full.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == train.num_rows // 3
    assert set(json.loads(lines[0])) == {"instruction", "input", "output"}


def test_sft_rows_become_prompts_with_spans(built: Path) -> None:
    row = read_table_dir(built / "sft" / "train", SFT).to_pylist()[0]
    tokenizer = train_tokenizer([row["instruction"], row["output"]])
    enc = build_prompt(tokenizer, row["user_part"], row["news_part"], row["instruction_part"], row["output"])
    assert tokenizer.decode(enc.input_ids[slice(*enc.news_span)]).startswith("现在你看到了一则新闻")
    assert tokenizer.decode(enc.input_ids[slice(*enc.user_span)]).startswith("你的用户名为")


def test_configured_exclusion_words_replace_the_default_list(built: Path, crawl_dir: Path, tmp_path: Path) -> None:
    history = read_table_dir(built / "clean" / "history", CLEAN_HISTORY)["text"].to_pylist()
    word = Counter(history[0][i:i + 2] for i in range(len(history[0]) - 1)).most_common(1)[0][0]
    hits = sum(word in text for text in history)
    out = tmp_path / "dataset"
    assert run(config(crawl_dir, out, steps=["clean"], exclusion_words=[word], min_history_posts=1)) == 0
    assert report(out, "clean")["dropped_by_rule"]["excluded_word"] >= hits > 0
    kept = read_table_dir(out / "clean" / "history", CLEAN_HISTORY)["text"].to_pylist()
    assert not any(word in text for text in kept)


def test_a_rerun_skips_what_is_up_to_date_and_redoes_what_changed(built: Path, crawl_dir: Path) -> None:
    stamps = {step: (built / step / SUCCESS).stat().st_mtime_ns for step in ("clean", "retrieval", "personas", "sft")}
    assert run(config(crawl_dir, built)) == 0
    assert {step: (built / step / SUCCESS).stat().st_mtime_ns for step in stamps} == stamps
    assert run(config(crawl_dir, built, top_k=3)) == 0
    after = {step: (built / step / SUCCESS).stat().st_mtime_ns for step in stamps}
    assert after["clean"] == stamps["clean"] and after["personas"] == stamps["personas"]
    assert after["retrieval"] != stamps["retrieval"] and after["sft"] != stamps["sft"]
    assert max(len(r["history_mids"]) for r in read_table_dir(built / "retrieval", RETRIEVAL).to_pylist()) == 3


def test_personas_through_an_endpoint_never_pay_twice(crawl_dir: Path, tmp_path: Path, ray_local) -> None:
    out = tmp_path / "dataset"
    assert run(config(crawl_dir, out, steps=["clean"])) == 0
    with FakeLLM(FakeLLMConfig(rate_500=0.5, seed=4)).running() as flaky:
        endpoint = {"base_url": flaky.base_url, "model": "fake-persona-1", "max_retries": 0, "concurrency": 4}
        assert run(config(crawl_dir, out, steps=["persona"], persona=endpoint)) == 0
        first_calls = flaky.calls.total
    first = read_table_dir(out / "personas", PERSONAS).to_pylist()
    failed = [p for p in first if p["source"] == "offline-fallback"]
    assert failed and len(failed) < len(first) and first_calls == len(first)
    assert all(p["error"].startswith("InternalServerError 500") for p in failed)
    assert report(out, "personas")["prompt_tokens"] > 0

    with FakeLLM().running() as healthy:
        endpoint = {"base_url": healthy.base_url, "model": "fake-persona-1", "concurrency": 4}
        assert run(config(crawl_dir, out, steps=["persona"], persona=endpoint, force=True)) == 0
        second_calls = healthy.calls.total
    second = {p["user_id"]: p for p in read_table_dir(out / "personas", PERSONAS).to_pylist()}
    assert second_calls == len(failed)  # the cache answered for everyone else
    assert {p["source"] for p in second.values()} == {"cache", "llm"}
    assert all(second[p["user_id"]]["source"] == "llm" for p in failed)


def test_a_plain_rerun_asks_again_only_for_the_personas_that_failed(crawl_dir: Path, tmp_path: Path,
                                                                   ray_local) -> None:
    out = tmp_path / "dataset"
    assert run(config(crawl_dir, out, steps=["clean"])) == 0
    with FakeLLM(FakeLLMConfig(rate_500=0.3, seed=9)).running() as flaky:
        endpoint = {"base_url": flaky.base_url, "model": "fake-persona-1", "max_retries": 0, "concurrency": 4}
        assert run(config(crawl_dir, out, steps=["persona"], persona=endpoint)) == 0
    failed = report(out, "personas")["failed"]
    assert failed > 0
    with FakeLLM().running() as healthy:
        endpoint["base_url"] = healthy.base_url
        assert run(config(crawl_dir, out, steps=["persona"], persona=endpoint)) == 0  # no force=true
        assert healthy.calls.total == failed
    assert report(out, "personas")["failed"] == 0


def test_a_killed_persona_run_resumes_without_paying_twice(crawl_dir: Path, tmp_path: Path, ray_local) -> None:
    """Kill the job (SIGKILL, the worst case) once the endpoint has answered half the users; every
    answer given before the kill is kept, so the rerun asks only for the others."""
    out = tmp_path / "dataset"
    assert run(config(crawl_dir, out, steps=["clean"])) == 0
    users = len({row["user_id"] for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()})
    answered = users // 2
    with FakeLLM(FakeLLMConfig(hold_after=answered)).running() as llm:
        endpoint = {"base_url": llm.base_url, "model": "fake-persona-1", "concurrency": 4}
        path = tmp_path / "dataset.yaml"
        path.write_text(yaml.safe_dump({
            "crawl_dir": str(crawl_dir), "output_dir": str(out), "steps": ["persona"], "persona": endpoint,
            "ray": {"address": ray_local.address},
        }))
        job = subprocess.Popen([sys.executable, "-m", "dataset_jobs", "--config", str(path)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: llm.calls.total >= answered and llm.holding > 0, "the endpoint to answer half the users")
            wait_for(lambda: journal_rows(out) == answered, "the answers to reach the persona cache")
        finally:
            job.kill()
            job.wait(timeout=30)
        wait_for(lambda: llm.holding == 0, "the killed job's workers to hang up")
        llm.release()
        assert run(config(crawl_dir, out, steps=["persona"], persona=endpoint)) == 0
        assert llm.calls.total == users and max(llm.calls.by_prompt.values()) == 1
    sources = Counter(p["source"] for p in read_table_dir(out / "personas", PERSONAS).to_pylist())
    assert sources == {"cache": answered, "llm": users - answered}
    assert not list((out / "persona_cache").glob("journal-*"))  # folded into Parquet parts


def journal_rows(out: Path) -> int:
    return sum(len(path.read_text(encoding="utf-8").splitlines())
               for path in (out / "persona_cache").glob("journal-*.jsonl"))


def wait_for(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_malformed_rows_and_unreadable_files_are_reported_not_fatal(crawl_dir: Path, tmp_path: Path, ray_local,
                                                                      caplog) -> None:
    broken = tmp_path / "crawl"
    shutil.copytree(crawl_dir, broken)
    from datetime import datetime, timezone

    from cluster.parquet import atomic_write_parquet
    from cluster.schemas import HISTORY

    now = datetime.now(timezone.utc)
    rows = [{"user_id": None, "mid": "x1", "text": "无主的微博", "crawled_at": now},
            {"user_id": "u", "mid": "x2", "text": None, "crawled_at": now}]
    lax = pa.schema([field.with_nullable(True) for field in HISTORY])  # what a buggy writer could leave behind
    atomic_write_parquet(pa.Table.from_pylist(rows, schema=lax), broken / "history" / "part-bad-rows.parquet")
    (broken / "history" / "part-truncated.parquet").write_bytes(b"PAR1" + b"\x00" * 40)
    out = tmp_path / "dataset"
    assert run(config(broken, out, steps=["clean"])) == 0
    clean = report(out, "clean")
    assert clean["dropped_by_rule"]["malformed"] == 2
    assert any("part-truncated.parquet" in message for message in caplog.messages)


def test_missing_crawl_tables_are_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="lacks the crawl tables"):
        run(config(tmp_path / "nowhere", tmp_path / "out"))
    code = main(["build-dataset", f"crawl_dir={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'out'}"])
    assert code == 2
    assert "lacks the crawl tables" in capsys.readouterr().err


def test_held_out_topics_the_data_lacks_are_a_config_error(built: Path, crawl_dir: Path) -> None:
    before = (built / "sft" / SUCCESS).read_text()
    with pytest.raises(ConfigError, match=r"test_topics: \['no such topic'\]"):
        run(config(crawl_dir, built, steps=["sft"], test_topics=["no such topic"]))
    assert (built / "sft" / SUCCESS).read_text() == before  # the last good SFT set stays


def test_an_endpoint_without_a_model_is_a_config_error_before_any_work(crawl_dir: Path, tmp_path: Path) -> None:
    endpoint = {"base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(ConfigError, match="persona.model"):
        run(config(crawl_dir, tmp_path / "out", persona=endpoint))
    assert not (tmp_path / "out").exists()


def test_steps_flag_on_the_command_line(crawl_dir: Path, tmp_path: Path, ray_local) -> None:
    out = tmp_path / "dataset"
    code = main(["build-dataset", "--steps", "clean", f"crawl_dir={crawl_dir}", f"output_dir={out}",
                 "ray.include_dashboard=false"])
    assert code == 0
    assert (out / "clean" / SUCCESS).is_file() and not (out / "retrieval").exists()


@pytest.mark.parametrize(
    ("topics", "fraction", "tests"), [(["a"], 0.2, 0), (["a", "b"], 0.2, 1), (list("abcdefghij"), 0.3, 3)]
)
def test_split_by_topic_is_seeded_and_never_empties_train(topics, fraction, tests) -> None:
    split = split_topics(topics, fraction, seed=1)
    assert split == split_topics(topics, fraction, seed=1)
    assert sum(1 for s in split.values() if s == "test") == tests
    assert any(s == "train" for s in split.values())
