"""`socialalign demo`: the whole pipeline end to end, for real, on a laptop with no GPU, no cookies,
no API key and no model weights.

A local Ray (or --address), the local Weibo simulator on 127.0.0.1, then every stage with its own
code: crawl through the cookie pool -> build-dataset on Ray Data -> a tiny Qwen2 base model
pretrained on the crawled posts (nothing can be downloaded) -> PAC-LoRA with Ray Train + DeepSpeed
-> Ray Serve -> predictions for the held-out topic through the served API (micro posts and the
macro sentiment distribution) -> the evaluation report with plots. A rerun with the same --out
reuses what finished: the crawl resumes, dataset steps and the base model are skipped, training
continues from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cluster.llm import LLMEndpointConfig
from cluster.ray_connect import ray_session
from cluster.stage_config import StageConfig

log = logging.getLogger(__name__)


class DemoConfig(StageConfig):
    """The whole pipeline end to end on the embedded default: simulator, crawl, dataset, a tiny
    pretrained base model, PAC-LoRA training, serving, prediction and the evaluation report."""

    size: Literal["smoke", "small", "medium"] = Field("small", description="smoke (tests) | small | medium")
    out: Path = Field(Path("demo-out"), description="every artifact goes under this directory")
    keep_serving: bool = Field(False, description="leave the endpoint up at the end (Ctrl-C stops it)")
    port: int = Field(0, ge=0, le=65535, description="serving port (0: a free one)")
    persona: LLMEndpointConfig = Field(
        default_factory=LLMEndpointConfig, description="an OpenAI-compatible endpoint for personas (default: offline)"
    )


DEMO_COOKIES = 4
ADAPTER_ID = "pac-lora"


@dataclass(frozen=True)
class DemoSize:
    users: int
    history: tuple[int, int]
    hot_topic_posts: int
    topic_posts: int
    hidden: int
    pretrain_steps: int
    epochs: float


SIZES = {
    "smoke": DemoSize(users=30, history=(10, 30), hot_topic_posts=120, topic_posts=40, hidden=64,
                      pretrain_steps=60, epochs=0.5),
    "small": DemoSize(users=100, history=(10, 60), hot_topic_posts=400, topic_posts=80, hidden=128,
                      pretrain_steps=300, epochs=1.0),
    "medium": DemoSize(users=200, history=(20, 120), hot_topic_posts=1200, topic_posts=150, hidden=192,
                       pretrain_steps=800, epochs=2.0),
}


@dataclass
class DemoSummary:
    rows: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str, text: str) -> None:
        line = f"[{name:<13}] {text}"
        self.lines.append(line)
        print(line, flush=True)


def run(config: DemoConfig) -> int:
    import ray

    out, size = config.out.resolve(), SIZES[config.size]
    out.mkdir(parents=True, exist_ok=True)
    summary = DemoSummary()
    began = time.monotonic()
    with ray_session(config.ray) as info:
        worker = ray.get(ray.remote(num_cpus=0)(_where_am_i).remote())
        summary.stage("ray", f"ok: {info.cpus:g} CPUs, {info.gpus:g} GPUs at {info.address}; a task ran on {worker}"
                      + (f"; dashboard {info.dashboard_url}" if info.dashboard_url else ""))
        held_out = _crawl(config, size, out / "crawl", summary)
        _dataset(config, out, held_out, summary)
        _base_model(config, size, out, summary)
        adapter = _train(config, size, out, summary)
        _serve_and_predict(config, out, adapter, summary, started_here=info.started_here)
        _evaluate(config, out, summary)
    _print_summary(out, summary, adapter, time.monotonic() - began)
    return 0


def _crawl(config: DemoConfig, size: DemoSize, output_dir: Path, summary: DemoSummary) -> str:
    """Crawl the simulator's topics through the cookie pool, as a user would crawl Weibo; returns the
    topic held out for evaluation (a regular one: the first, hot topic trains)."""
    from pydantic import SecretStr

    from crawl_actors.config import CrawlConfig
    from crawl_actors.job import crawl
    from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator
    from crawl_actors.tasks import BEIJING

    rates = {"search": RateLimit(20, 2), "mobile": RateLimit(40, 4), "ajax": RateLimit(40, 4), "ai": RateLimit(20, 2)}
    simulator = WeiboSimulator(SimulatorConfig(
        seed=0, num_users=size.users, history_posts=size.history, hot_topic_posts=size.hot_topic_posts,
        topic_posts=size.topic_posts, rates=rates,
    ))
    topics = simulator.topics()
    start = min(t.start for t in topics).astimezone(BEIJING)
    end = max(t.end for t in topics).astimezone(BEIJING)
    with simulator.running():
        crawl_config = CrawlConfig(
            ray=config.ray, output_dir=output_dir, keywords=[t.query for t in topics],
            start=f"{start:%Y-%m-%d}-{start.hour}", end=f"{end:%Y-%m-%d}-{end.hour}",
            cookies=SecretStr("\n".join(simulator.new_cookies(DEMO_COOKIES))),
            endpoints={host: simulator.base_url for host in ("search", "mobile", "ajax", "ai")},
            rates={host: {"rate": r.rate, "burst": r.burst} for host, r in rates.items()},
            history_days=None, cooldown_s=1.0, cooldown_max_s=10.0, max_pause_s=30.0,
        )
        began = time.monotonic()
        result = crawl(crawl_config)
        violations = simulator.stats()["violations"]
    if result.stop_reason is not None:
        raise RuntimeError(f"the crawl stopped early: {result.stop_reason}")
    summary.rows.update({f"crawl/{name}": count for name, count in result.rows.items()})
    rows = ", ".join(f"{count} {name}" for name, count in result.rows.items())
    summary.stage("crawl", f"ok: {rows} from the Weibo simulator in {time.monotonic() - began:.1f}s, "
                           f"{result.requests} requests through {DEMO_COOKIES} cookies, {violations} rate-limit violations")
    return topics[-1].name


def _dataset(config: DemoConfig, out: Path, held_out: str, summary: DemoSummary) -> None:
    from dataset_jobs.config import DatasetConfig
    from dataset_jobs.job import SUCCESS, run

    began = time.monotonic()
    dataset = DatasetConfig(ray=config.ray, crawl_dir=out / "crawl", output_dir=out / "dataset",
                            persona=config.persona, test_topics=[held_out], variants=["full"])
    if run(dataset) != 0:
        raise RuntimeError("build-dataset failed")
    reports = {step: json.loads((out / "dataset" / step / SUCCESS).read_text())["report"]
               for step in ("clean", "retrieval", "personas", "sft")}
    sft = reports["sft"]
    summary.rows.update({"dataset/clean_history": reports["clean"]["history_rows_kept"],
                         "dataset/cases": reports["clean"]["cases"], "dataset/personas": reports["personas"]["users"],
                         "sft/train": sft["train_rows"], "sft/test": sft["test_rows"]})
    summary.figures["held_out_topics"] = sft["test_topics"]
    summary.stage("build-dataset", f"ok: {reports['clean']['history_rows_kept']} clean history posts, "
                                   f"{reports['clean']['cases']} cases, {reports['personas']['users']} personas "
                                   f"({reports['personas']['endpoint']}), SFT {sft['train_rows']} train / "
                                   f"{sft['test_rows']} test rows (held-out topic: {', '.join(sft['test_topics'])}) "
                                   f"in {time.monotonic() - began:.1f}s")


def _base_model(config: DemoConfig, size: DemoSize, out: Path, summary: DemoSummary) -> None:
    """A tiny Qwen2 and a tokenizer trained on the crawled history, pretrained on it (nothing to download)."""
    from transformers import AutoTokenizer

    from cluster.parquet import read_table_dir
    from cluster.schemas import CLEAN_HISTORY, SFT
    from pac_lora.prompt import SYSTEM_PROMPT
    from pac_lora.tiny import build_tiny_checkpoint, pretrain_tiny_lm

    directory, marker = out / "model", out / "model" / "pretrained.json"
    wanted = {"hidden": size.hidden, "steps": size.pretrain_steps, "recipe": 5}
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == wanted:
        losses = json.loads(marker.read_text())["loss"]
        summary.stage("base model", f"reused {directory} (pretrained, loss {losses[0]:.2f} -> {losses[1]:.2f})")
        return
    history = read_table_dir(out / "dataset" / "clean" / "history", CLEAN_HISTORY)
    train_rows = read_table_dir(out / "dataset" / "sft" / "train", SFT).to_pylist()  # never the held-out topic
    # Users' history plus the training topics' posts as plain text (no prompt, no author): the
    # language a base model would have read on the web. No post of the held-out topic.
    posts = [t for t in history["text"].to_pylist() if t] + [r["output"] for r in train_rows if r["output"]]
    began = time.monotonic()
    shutil.rmtree(out / "train", ignore_errors=True)  # checkpoints of another base model cannot resume here
    build_tiny_checkpoint(directory, hidden_size=size.hidden, num_layers=2, num_heads=4, num_kv_heads=2,
                          intermediate_size=size.hidden * 2, texts=posts + [r["instruction"] for r in train_rows],
                          vocab_size=4000, seed=0)
    # The posts teach the language; the training prompts the template and long positions. Each prompt
    # is answered by a random post of the corpus, never its own answer: the base model learns that a
    # post follows the prompt (as an instruct model knows), and which user writes what about which
    # news is left to PAC-LoRA, so the zero-shot base stays a fair baseline.
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    pick = random.Random(0)
    conversations = [tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": r["instruction"]},
         {"role": "assistant", "content": pick.choice(posts)}], tokenize=False).rstrip().removesuffix("<|im_end|>")
        for r in train_rows]  # pretraining ends every text with the end-of-turn token itself
    first, last = pretrain_tiny_lm(directory, posts + conversations, steps=size.pretrain_steps, batch_size=8,
                                   seq_len=512, progress=True)
    marker.write_text(json.dumps({"settings": wanted, "loss": [first, last]}))
    summary.stage("base model", f"ok: a tiny Qwen2 (hidden {size.hidden}) pretrained on {len(posts)} crawled posts "
                                f"and {len(conversations)} training prompts, loss {first:.2f} -> {last:.2f} "
                                f"in {time.monotonic() - began:.1f}s")


def _train(config: DemoConfig, size: DemoSize, out: Path, summary: DemoSummary) -> Path:
    from train_jobs.config import TrainConfig
    from train_jobs import train

    train_config = TrainConfig(
        ray=config.ray, base_model=str(out / "model"), sft_path=out / "dataset" / "sft", output_dir=out / "train",
        method="pac_lora", prompt_variant="full", run_name="demo", num_workers=1, zero_stage=2,
        learning_rate=1e-3, epochs=size.epochs, effective_batch_size=8, micro_batch_size=2, warmup_ratio=0.1,
        max_length=1024, checkpoint_every_steps=25, log_every_steps=5,
    )
    result = train(train_config)
    summary.figures["loss"] = (result.first_loss, result.final_loss)
    resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
    summary.stage("train", f"ok: PAC-LoRA, {result.steps} steps, {result.tokens} tokens, loss "
                           f"{_number(result.first_loss)} -> {_number(result.final_loss)} in {result.seconds:.1f}s"
                           f"{resumed}; adapter {_show(result.adapter_dir)}")
    return result.adapter_dir


def _serve_and_predict(config: DemoConfig, out: Path, adapter: Path, summary: DemoSummary,
                       started_here: bool) -> None:
    from ray import serve

    from serve.config import PredictConfig, ServeConfig
    from serve.app import deploy
    from serve.predict import run as predict

    predictions, marker = out / "predictions", out / "predictions" / "_SUCCESS.json"
    fingerprint = _fingerprint(adapter, out / "dataset" / "sft" / "test")
    if not config.keep_serving and marker.is_file() and json.loads(marker.read_text())["fingerprint"] == fingerprint:
        last = json.loads(marker.read_text())
        summary.figures["throughput"] = last["throughput"]
        summary.stage("serve", f"reused the predictions in {_show(predictions)} (made by this adapter, "
                               f"{last['throughput']:.1f} posts/s); held-out topic crowd: {last['macro']}")
        return
    port = config.port or _free_port()
    serve_config = ServeConfig(
        ray=config.ray, base_model=str(out / "model"), adapters={ADAPTER_ID: str(adapter)}, default_model=ADAPTER_ID,
        host="127.0.0.1", port=port, replica_cpus=1, max_batch_size=16, max_ongoing_requests=64,
        labeler="offline", population_dir=out / "dataset",
    )
    url = deploy(serve_config)
    try:
        began = time.monotonic()
        for method, model in ((ADAPTER_ID, ADAPTER_ID), ("zero-shot", serve_config.base_model_id)):
            predict(PredictConfig(ray=config.ray, test_path=out / "dataset" / "sft" / "test", endpoint=url,
                                  model=model, method=method, output_path=predictions / f"{method}.parquet",
                                  batch_size=16, decoding={"max_new_tokens": 96}))
        seconds = time.monotonic() - began
        served = summary.rows.get("sft/test", 0) * 2
        summary.figures["throughput"] = served / seconds if seconds else 0.0
        macro = _macro(url, out)
        marker.write_text(json.dumps({"fingerprint": fingerprint, "throughput": summary.figures["throughput"],
                                      "macro": macro}, ensure_ascii=False))
        summary.stage("serve", f"ok: {url} served {served} predictions (PAC-LoRA and zero-shot) at "
                               f"{summary.figures['throughput']:.1f} posts/s; held-out topic crowd: {macro}")
        if config.keep_serving:
            _keep_serving(url)
    finally:
        serve.delete(serve_config.app_name)
        if started_here:  # a cluster we only joined keeps its other Serve applications
            serve.shutdown()


def _fingerprint(adapter: Path, test_split: Path) -> str:
    """What the predictions depend on: the adapter's bytes (a finished training run exports the same
    adapter again on a rerun) and the test split's files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in adapter.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    for path in sorted(p for p in test_split.rglob("*") if p.is_file()):
        digest.update(f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def _macro(url: str, out: Path) -> str:
    """The macro endpoint on the held-out topic's population (its SFT test users), as an analyst asks it."""
    import requests

    from cluster.parquet import read_table_dir
    from cluster.schemas import SFT

    row = read_table_dir(out / "dataset" / "sft" / "test", SFT).slice(0, 1).to_pylist()[0]
    body = {"news": row["news"], "topic": row["topic"], "population": {"path": "sft/test"}, "samples_per_class": 1}
    response = requests.post(f"{url}/v1/predict/macro", json=body, timeout=600)
    response.raise_for_status()
    result = response.json()
    shares = result["distribution"] or {}
    return (f"#{row['topic']}# {result['users']} users -> "
            + " / ".join(f"{label} {shares.get(label, 0):.2f}" for label in ("positive", "neutral", "negative")))


def _evaluate(config: DemoConfig, out: Path, summary: DemoSummary) -> None:
    import pyarrow.parquet as pq

    from serve.evaluate.config import EvaluateConfig
    from serve.evaluate.job import run

    report_dir = out / "report"
    predictions = [out / "predictions" / f"{method}.parquet" for method in (ADAPTER_ID, "zero-shot")]
    reused = (report_dir / "summary.parquet").is_file() and (
        (report_dir / "summary.parquet").stat().st_mtime_ns > max(p.stat().st_mtime_ns for p in predictions))
    if not reused and run(EvaluateConfig(ray=config.ray, predictions=predictions, output_dir=report_dir)) != 0:
        raise RuntimeError("evaluate failed")
    methods = {row["method"]: row for row in pq.read_table(report_dir / "summary.parquet").to_pylist()}
    summary.figures["js"] = {method: row["js"] for method, row in methods.items()}
    pac, zero = methods[ADAPTER_ID], methods["zero-shot"]
    summary.stage("evaluate", f"{'reused' if reused else 'ok'}: PAC-LoRA ROUGE-L {pac['rougeL']:.3f} "
                              f"(zero-shot {zero['rougeL']:.3f}), macro JS {_number(pac['js'])} "
                              f"(zero-shot {_number(zero['js'])}); report {_show(report_dir / 'report.md')}")


def _print_summary(out: Path, summary: DemoSummary, adapter: Path, seconds: float) -> None:
    first, last = summary.figures.get("loss", (None, None))
    print("\nSocialAlign demo finished in {:.0f}s".format(seconds))
    print("  rows:       " + ", ".join(f"{name} {count}" for name, count in summary.rows.items()))
    print(f"  training:   loss {_number(first)} -> {_number(last)}")
    print(f"  serving:    {summary.figures.get('throughput', 0.0):.1f} posts/s")
    print("  macro JS:   " + ", ".join(f"{m} {_number(v)}" for m, v in summary.figures.get("js", {}).items()))
    print(f"  tables:     {_show(out / 'crawl')}/{{topics,posts,users,history,errors}}")
    print(f"              {_show(out / 'dataset')}/{{clean/history,clean/cases,retrieval,personas,sft/train,sft/test}}")
    print(f"              {_show(out / 'predictions')}/{{{ADAPTER_ID},zero-shot}}.parquet, "
          f"{_show(out / 'report')}/{{scored,summary,macro}}.parquet")
    print(f"  adapter:    {_show(adapter)}")
    print(f"  report:     {_show(out / 'report' / 'report.md')}")


def _show(path: Path) -> str:
    """A path as the user typed it: relative to where they are when it lies below, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _keep_serving(url: str) -> None:
    from serve.app import _wait_for_stop

    print(f"serving at {url}; try:\n  curl -s {url}/v1/models\n"
          f"  curl -s {url}/v1/predict/micro -H 'Content-Type: application/json' -d "
          "'{\"user\": {\"name\": \"小明\", \"history\": [\"今天天气不错\"]}, \"news\": \"北京发布了新的交通政策。\", "
          "\"topic\": \"北京交通新政\"}'\nCtrl-C stops it.", flush=True)
    _wait_for_stop()


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _where_am_i() -> str:
    return f"{socket.gethostname()} (Python {platform.python_version()})"


if __name__ == "__main__":
    from cluster.cli import module_main

    module_main("cluster.demo")
