"""The demo's run: every stage in data-flow order, each as its user runs it, then the summary."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from cluster import stages
from cluster.demo import services
from cluster.demo.base_model import build_base_model
from cluster.demo.config import SIZES, DemoConfig, DemoSize
from cluster.demo.console import Console, demo_console, quiet_libraries
from cluster.logs import register_secret
from cluster.parquet import read_table_dir
from cluster.presets import CROWD_SAMPLING
from cluster.ray_connect import RayInfo, ray_session
from cluster.reports import read_report
from cluster.schemas import SFT

COOKIES = 4
ADAPTER_ID = "pac-lora"
METHODS = (ADAPTER_ID, "zero-shot")
# The simulated Weibo's per-cookie limits, fast enough for a demo; the crawl keeps to the same pace.
RATES = {"search": (20, 2), "mobile": (40, 4), "ajax": (40, 4), "ai": (20, 2)}
DATASET_STEPS = ("clean", "retrieval", "personas", "sft")
# Against the simulator's truth, on the held-out topic: the four methods the summary names, the
# truth-aware labeller that scores them (labeller error hides nothing), and the oracle's samples per post.
TRUTH_METHODS = ("zero-shot", ADAPTER_ID, "history-baseline", "oracle")
TRUTH_LABELER = "simulator-lexicon"
ORACLE_SAMPLES = 5
BENCHMARK = "bench/quality.py and docs/evaluation.md#quality-benchmark"


def run(config: DemoConfig) -> int:
    out, size = config.out.resolve(), SIZES[config.size]
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with demo_console(out / "logs" / "demo.log") as console:
        import ray
        import ray.data  # noqa: F401 - each sets up its loggers on import: import them all, then quiet them
        import ray.serve  # noqa: F401
        import ray.train  # noqa: F401

        quiet_libraries(console.log)
        ray_config = config.ray.model_copy(update={"log_to_driver": False})  # workers log to Ray's folder
        with ray_session(ray_config) as info:
            quiet_libraries(console.log)
            settings = {"ray": ray_config.model_dump(mode="json")}
            worker = ray.get(ray.remote(num_cpus=0)(_where_am_i).remote())
            console.stage("ray", f"ok: {info.cpus:g} CPUs, {info.gpus:g} GPUs at {info.address}; a task ran on "
                                 f"{worker}" + (f"; dashboard {info.dashboard_url}" if info.dashboard_url else ""))
            figures: dict[str, Any] = {"rows": {}}
            _crawl(settings, size, out, console, figures)
            _dataset(config, settings, out, console, figures)
            console.stage("base model", build_base_model(out, size))
            _train(settings, size, out, console, figures)
            _serve_and_predict(config, settings, info, out, console, figures)
            _evaluate(settings, out, console, figures)
            _against_truth(settings, size, out, console, figures)
        _summary(console, out, figures, info, time.monotonic() - began)
    return 0


def _crawl(settings: dict, size: DemoSize, out: Path, console: Console, figures: dict) -> None:
    """Crawl the simulator's topics through the cookie pool, as a user would crawl Weibo; the last
    topic (a regular one: the first, hot topic trains) is held out for evaluation."""
    began = time.monotonic()
    topics, violations = crawl_simulator(settings, world_arguments(size), out / "crawl", console.log)
    figures["held_out"] = topics[-1].name
    report = read_report(out / "crawl")
    figures["rows"].update({f"crawl/{name}": count for name, count in report["rows"].items()})
    rows = ", ".join(f"{count} {name}" for name, count in report["rows"].items())
    console.stage("crawl", f"ok: {rows} from the Weibo simulator in {time.monotonic() - began:.1f}s, "
                           f"{report['requests']} requests through {COOKIES} cookies, "
                           f"{violations} rate-limit violations")


def world_arguments(size: DemoSize) -> list[str]:
    """The simulator's world for `size` (seed, users, history, topic posts): the crawl serves it, and
    the truth is written from it again (the same arguments build the same world)."""
    return ["--seed", "0", "--users", str(size.users), "--history", *map(str, size.history),
            "--hot-topic-posts", str(size.hot_topic_posts), "--topic-posts", str(size.topic_posts)]


def crawl_simulator(settings: dict, arguments: list[str], output_dir: Path, log: Any,
                    keep: Callable[[services.Topic], bool] = lambda topic: True) -> tuple[list[services.Topic], int]:
    """Start the simulator with `arguments` (its world: seed, users, topics, ...), crawl its topics that
    `keep` accepts through the cookie pool into `output_dir`, and stop it: the world's topics (all of
    them) and the requests that broke its rate limits. The demo and bench/quality.py crawl through here."""
    arguments = [*arguments, "--cookies", str(COOKIES),
                 "--rates", ",".join(f"{h}={r}:{b}" for h, (r, b) in RATES.items())]
    with services.simulator(arguments, log) as world:
        for cookie in world.cookies:
            register_secret(cookie)
        crawled = [topic for topic in world.topics if keep(topic)]
        starts = [datetime.fromisoformat(t.start) for t in crawled]
        ends = [datetime.fromisoformat(t.end) for t in crawled]
        stages.run("crawl", {
            **settings, "output_dir": str(output_dir), "keywords": [t.query for t in crawled],
            "start": _weibo_hour(min(starts)), "end": _weibo_hour(max(ends)), "cookies": "\n".join(world.cookies),
            "endpoints": dict.fromkeys(("search", "mobile", "ajax", "ai"), world.base_url),
            "rates": {host: {"rate": rate, "burst": burst} for host, (rate, burst) in RATES.items()},
            "history_days": None, "cooldown_s": 1.0, "cooldown_max_s": 10.0, "max_pause_s": 30.0,
        })
        return world.topics, world.violations()


def _dataset(config: DemoConfig, settings: dict, out: Path, console: Console, figures: dict) -> None:
    began = time.monotonic()
    stages.run("build-dataset", {
        **settings, "crawl_dir": str(out / "crawl"), "output_dir": str(out / "dataset"),
        "persona": config.persona.model_dump(mode="json", exclude={"api_key"}), "test_topics": [figures["held_out"]],
        "variants": ["full"],
    })
    clean, personas, sft = (read_report(out / "dataset" / step) for step in ("clean", "personas", "sft"))
    figures["rows"].update({"dataset/clean_history": clean["history_rows_kept"], "dataset/cases": clean["cases"],
                            "dataset/personas": personas["users"], "sft/train": sft["train_rows"],
                            "sft/test": sft["test_rows"]})
    console.stage("build-dataset", f"ok: {clean['history_rows_kept']} clean history posts, {clean['cases']} cases, "
                                   f"{personas['users']} personas ({personas['endpoint']}), SFT {sft['train_rows']} "
                                   f"train / {sft['test_rows']} test rows (held-out topic: "
                                   f"{', '.join(sft['test_topics'])}) in {time.monotonic() - began:.1f}s")


def _train(settings: dict, size: DemoSize, out: Path, console: Console, figures: dict) -> None:
    stages.run("train", {
        **settings, "base_model": str(out / "model"), "sft_path": str(out / "dataset" / "sft"),
        "output_dir": str(out / "train"), "method": "pac_lora", "prompt_variant": "full", "run_name": "demo",
        "num_workers": 1, "zero_stage": 2, "learning_rate": 1e-3, "epochs": size.epochs, "effective_batch_size": 8,
        "micro_batch_size": 2, "warmup_ratio": 0.1, "max_length": 1024, "checkpoint_every_steps": 25,
        "log_every_steps": 5,
    })
    report = read_report(out / "train" / "demo")
    figures["loss"] = (report["first_loss"], report["final_loss"])
    figures["adapter"] = Path(report["adapter_dir"])
    resumed = f", resumed from step {report['resumed_from_step']}" if report["resumed_from_step"] else ""
    console.stage("train", f"ok: PAC-LoRA, {report['steps']} steps, {report['tokens']} tokens, loss "
                           f"{_number(report['first_loss'])} -> {_number(report['final_loss'])} in "
                           f"{report['seconds']:.1f}s{resumed}; adapter {_show(figures['adapter'])}")


def _serve_and_predict(config: DemoConfig, settings: dict, info: RayInfo, out: Path, console: Console,
                       figures: dict) -> None:
    """`socialalign serve` in a process of its own, then predictions for the held-out topic through
    its API (PAC-LoRA and the zero-shot base), and the macro endpoint as an analyst asks it."""
    predictions, marker = out / "predictions", out / "predictions" / "_SUCCESS.json"
    fingerprint = _fingerprint(figures["adapter"], out / "dataset" / "sft" / "test")
    last = json.loads(marker.read_text()) if marker.is_file() else {}
    if not config.keep_serving and last.get("fingerprint") == fingerprint:
        figures["throughput"] = last["throughput"]
        console.stage("serve", f"reused the predictions in {_show(predictions)} (made by this adapter, "
                               f"{last['throughput']:.1f} posts/s); held-out topic crowd: {last['macro']}")
        return
    serve_file = out / "serve.yaml"
    serve_file.write_text(yaml.safe_dump({
        "base_model": str(out / "model"), "adapters": {ADAPTER_ID: str(figures["adapter"])},
        "default_model": ADAPTER_ID, "host": "127.0.0.1", "port": config.port or _free_port(), "replica_cpus": 1,
        "max_batch_size": 16, "max_ongoing_requests": 64, "labeler": "offline", "population_dir": str(out / "dataset"),
        "log_level": config.log_level,
    }, allow_unicode=True))
    with services.serve_app(serve_file, info.address, console.log) as url:
        began = time.monotonic()
        for method in METHODS:
            stages.run("predict", {
                **settings, "test_path": str(out / "dataset" / "sft" / "test"), "endpoint": url,
                "model": ADAPTER_ID if method == ADAPTER_ID else "base", "method": method,
                "output_path": str(predictions / f"{method}.parquet"), "batch_size": 16,
                "decoding": {"max_new_tokens": 96, **CROWD_SAMPLING},
            })
        seconds = time.monotonic() - began
        served = figures["rows"].get("sft/test", 0) * len(METHODS)
        figures["throughput"] = served / seconds if seconds else 0.0
        macro = _macro(url, out)
        marker.write_text(json.dumps({"fingerprint": fingerprint, "throughput": figures["throughput"],
                                      "macro": macro}, ensure_ascii=False))
        console.stage("serve", f"ok: {url} served {served} predictions (PAC-LoRA and zero-shot) at "
                               f"{figures['throughput']:.1f} posts/s; held-out topic crowd: {macro}")
        if config.keep_serving:
            _keep_serving(console, url)


def _macro(url: str, out: Path) -> str:
    """The macro endpoint on the held-out topic's population (its SFT test users)."""
    import requests

    row = read_table_dir(out / "dataset" / "sft" / "test", SFT).slice(0, 1).to_pylist()[0]
    body = {"news": row["news"], "topic": row["topic"], "population": {"path": "sft/test"}, "samples_per_class": 1,
            "decoding": CROWD_SAMPLING}
    response = requests.post(f"{url}/v1/predict/macro", json=body, timeout=600)
    response.raise_for_status()
    result = response.json()
    shares = result["distribution"] or {}
    return (f"#{row['topic']}# {result['users']} users -> "
            + " / ".join(f"{label} {shares.get(label, 0):.2f}" for label in ("positive", "neutral", "negative")))


def _evaluate(settings: dict, out: Path, console: Console, figures: dict) -> None:
    import pyarrow.parquet as pq

    report_dir = out / "report"
    files = [out / "predictions" / f"{method}.parquet" for method in METHODS]
    summary = report_dir / "summary.parquet"
    reused = summary.is_file() and summary.stat().st_mtime_ns > max(p.stat().st_mtime_ns for p in files)
    if not reused:
        stages.run("evaluate", {**settings, "predictions": [str(p) for p in files], "output_dir": str(report_dir)})
    methods = {row["method"]: row for row in pq.read_table(summary).to_pylist()}
    figures["js"] = {method: row["js"] for method, row in methods.items()}
    pac, zero = methods[ADAPTER_ID], methods["zero-shot"]
    console.stage("evaluate", f"{'reused' if reused else 'ok'}: PAC-LoRA ROUGE-L {pac['rougeL']:.3f} "
                              f"(zero-shot {zero['rougeL']:.3f}), macro JS {_number(pac['js'])} "
                              f"(zero-shot {_number(zero['js'])}); report {_show(report_dir / 'report.md')}")


def _against_truth(settings: dict, size: DemoSize, out: Path, console: Console, figures: dict) -> None:
    """The held-out topic scored against the simulator's truth: the simulator's command writes the
    crawled world's truth and the oracle's predictions (each held-out post written again by its user,
    ORACLE_SAMPLES times), then evaluate scores zero-shot, PAC-LoRA, the history baseline and the
    oracle with the truth-aware labeller (the evaluate step above keeps the default labeller and the
    labelled real posts). A rerun reuses both while their inputs are unchanged."""
    truth_dir, report_dir, test_split = out / "truth", out / "report-truth", out / "dataset" / "sft" / "test"
    truth, oracle = truth_dir / "truth.parquet", truth_dir / "oracle.parquet"
    began = time.monotonic()
    written = oracle.is_file() and truth.is_file() and _newest(oracle) > _newest(*test_split.rglob("*.parquet"))
    if not written:
        try:
            services.simulator_truth([*world_arguments(size), "--write-truth", str(truth_dir), "--truth-topic",
                                      figures["held_out"], "--oracle-cases", str(test_split),
                                      "--oracle-samples", str(ORACLE_SAMPLES)], console.log)
        except RuntimeError as error:  # e.g. a crawl kept in `out` from an older simulator: another world
            raise RuntimeError(f"{error} (was {_show(out)} made by an older version of the simulator? remove it "
                               "and run the demo again)") from None
    files = [*(out / "predictions" / f"{method}.parquet" for method in METHODS), oracle]
    success = report_dir / "_SUCCESS.json"
    reused = written and success.is_file() and _newest(success) > _newest(*files, truth)
    if not reused:
        stages.run("evaluate", {**settings, "predictions": [str(p) for p in files], "output_dir": str(report_dir),
                                "labeler": TRUTH_LABELER, "truth": str(truth), "dataset": str(out / "dataset")})
    methods = read_report(report_dir)["methods"]
    figures["truth"] = {method: methods.get(method, {}) for method in TRUTH_METHODS}
    console.stage("truth", f"{'reused' if reused else 'ok'}: #{figures['held_out']}# against the simulator's "
                           f"truth ({TRUTH_LABELER}): micro macro-F1 {_by_method(figures, 'sentiment_macro_f1')}; "
                           f"macro JS {_by_method(figures, 'js')} in {time.monotonic() - began:.1f}s; "
                           f"report {_show(report_dir / 'report.md')}")


def _by_method(figures: dict, figure: str) -> str:
    return ", ".join(f"{method} {_number(values.get(figure))}" for method, values in figures["truth"].items())


def _newest(*paths: Path) -> int:
    return max((path.stat().st_mtime_ns for path in paths), default=0)


def _summary(console: Console, out: Path, figures: dict, info: RayInfo, seconds: float) -> None:
    first, last = figures.get("loss", (None, None))
    console.say(f"\nSocialAlign demo finished in {seconds:.0f}s")
    console.say("  rows:       " + ", ".join(f"{name} {count}" for name, count in figures["rows"].items()))
    console.say(f"  training:   loss {_number(first)} -> {_number(last)}")
    console.say(f"  serving:    {figures.get('throughput', 0.0):.1f} posts/s")
    console.say("  macro JS:   " + ", ".join(f"{m} {_number(v)}" for m, v in figures.get("js", {}).items()))
    if "truth" in figures:
        console.say(f"  held out:   #{figures['held_out']}#, {figures['rows'].get('sft/test')} posts, against the "
                    f"simulator's truth, labelled by {TRUTH_LABELER}:")
        console.say(f"              micro macro-F1 {_by_method(figures, 'sentiment_macro_f1')}")
        console.say(f"              macro JS       {_by_method(figures, 'js')}")
        console.say("              the demo is too small to show whether PAC-LoRA beats the baselines: the "
                    f"benchmark measures it ({BENCHMARK})")
    console.say(f"  tables:     {_show(out / 'crawl')}/{{topics,posts,users,history,errors}}")
    console.say(f"              {_show(out / 'dataset')}/{{clean/history,clean/cases,retrieval,personas,sft/train,"
                "sft/test}")
    console.say(f"              {_show(out / 'predictions')}/{{{','.join(METHODS)}}}.parquet, "
                f"{_show(out / 'report')}/{{scored,summary,macro}}.parquet")
    console.say(f"              {_show(out / 'truth')}/{{truth,oracle}}.parquet, "
                f"{_show(out / 'report-truth')}/{{scored,summary,macro}}.parquet")
    console.say(f"  adapter:    {_show(figures['adapter'])}")
    console.say(f"  report:     {_show(out / 'report' / 'report.md')}; against the truth: "
                f"{_show(out / 'report-truth' / 'report.md')}")
    console.say(f"  logs:       {_show(console.log_path)}" + (f"; Ray's: {info.log_dir}" if info.log_dir else ""))


def _keep_serving(console: Console, url: str) -> None:
    body = json.dumps({"user": {"name": "小明", "history": ["今天天气不错"]}, "news": "北京发布了新的交通政策。",
                       "topic": "北京交通新政"}, ensure_ascii=False)
    console.say(f"serving at {url}; try:\n  curl -s {url}/v1/models\n"
                f"  curl -s {url}/v1/predict/micro -H 'Content-Type: application/json' -d '{body}'\nCtrl-C stops it.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.say("stopping")


def _fingerprint(adapter: Path, test_split: Path) -> str:
    """What the predictions depend on: the adapter's bytes (a finished training run exports the same
    adapter again on a rerun) and the test split's files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in adapter.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    for path in sorted(p for p in test_split.rglob("*") if p.is_file()):
        digest.update(f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    return digest.hexdigest()


def _weibo_hour(moment: datetime) -> str:
    """A Weibo search bound, YYYY-MM-DD-H in Beijing time (the simulator gives its topics' bounds in it)."""
    return f"{moment:%Y-%m-%d}-{moment.hour}"


def _show(path: Path) -> str:
    """A path as the user typed it: relative to where they are when it lies below, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _where_am_i() -> str:
    return f"{socket.gethostname()} (Python {platform.python_version()})"
