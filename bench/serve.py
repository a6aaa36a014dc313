"""Serving throughput with dynamic batching vs one request at a time, over HTTP, tiny model.

The same Ray Serve application (`serve.app.build_app`) with a tiny Qwen2 and a PAC-LoRA adapter
(random weights), one Generator replica with 2 CPUs, answers the same 64 micro-prediction
requests (distinct users and news, greedy, 128 new tokens each, all through the adapter) twice:

1. batched: max_batch_size 16, 16 clients each sending its next request when the last returns;
2. baseline: max_batch_size 1, the 64 requests sent one at a time (the research code's loop).

throughput_ratio = batched requests/s / baseline requests/s (target >= 5); latencies are per
request, client side (p50, p95). Greedy decoding makes both runs do the same work, and their
outputs are compared (`outputs_equal`). The figures move with whatever else loads the CPUs.
Last line: one JSON object of the figures, ratios first.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import requests
import torch

from cluster.ray_connect import init_ray
from cluster.stage_config import RayConfig
from pac_lora import (
    PACLoraConfig,
    apply_pac_lora,
    build_tiny_checkpoint,
    load_base_model,
    save_adapter,
)
from serve.config import ServeConfig

NEWS = ["北京发布了新的交通政策。", "上海暴雨，地铁部分停运。", "新手机发布会今天举行，价格良心。", "奥运会今晚开幕。"]


def build_models(root: Path) -> tuple[Path, Path]:
    base_dir = build_tiny_checkpoint(root / "base", texts=NEWS)
    base, _ = load_base_model(base_dir)
    model = apply_pac_lora(base, PACLoraConfig())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.adapter_state_dict().values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return base_dir, save_adapter(model, root / "adapter")


def bodies(count: int, max_new_tokens: int) -> list[dict]:
    return [
        {
            "model": "pac",
            "user": {"name": f"用户{i}", "history": ["今天天气不错，出去走走。"] * (1 + i % 5),
                     "persona": "积极乐观" * (1 + i % 3)},
            "news": NEWS[i % len(NEWS)] * (1 + i % 2),
            "topic": f"话题{i % 7}",
            "decoding": {"temperature": 0, "max_new_tokens": max_new_tokens},
        }
        for i in range(count)
    ]


def deploy(base_dir: Path, adapter_dir: Path, port: int, batch_size: int) -> str:
    from serve.app import deploy as deploy_app

    config = ServeConfig(
        base_model=str(base_dir), adapters={"pac": str(adapter_dir)}, port=port, max_batch_size=batch_size,
        max_ongoing_requests=2 * max(16, batch_size), max_queued_requests=256, max_new_tokens_limit=256,
        app_name="bench-serve", replica_cpus=2,
        labeler="placeholder-unlabelled",  # the bench measures batched generation, not the sentiment labeller
    )
    return deploy_app(config)  # serve.run returns once both deployments are ready


def send_all(url: str, requests_: list[dict], concurrency: int) -> tuple[float, list[float], list[str], list[tuple]]:
    """Warm up, then send every request; (seconds, latencies, first predicted text each, (rows, seconds) per batch)."""
    local = threading.local()

    def send(body: dict) -> tuple[float, str]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        began = time.perf_counter()
        response = session.post(url + "/v1/predict/micro", json=body, timeout=120)
        response.raise_for_status()
        return time.perf_counter() - began, response.json()["predictions"][0]["text"]

    for body in requests_[:2]:  # warm-up: the adapter load and the first generate
        send(body)
    seen = len(generator_stats()["batch_sizes"])
    began = time.perf_counter()
    if concurrency == 1:
        results = [send(body) for body in requests_]
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(send, requests_))
    elapsed = time.perf_counter() - began
    stats = generator_stats()
    batches = list(zip(stats["batch_sizes"], stats["batch_seconds"], strict=True))[seen:]
    return elapsed, [latency for latency, _ in results], [text for _, text in results], batches


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def generator_stats() -> dict:
    from ray import serve

    handle = serve.get_deployment_handle("Generator", app_name="bench-serve")
    return handle.stats.remote().result(timeout_s=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    from ray import serve

    began = time.perf_counter()
    init_ray(RayConfig(num_cpus=4, include_dashboard=False, object_store_memory_mb=512))
    port = free_port()
    work = bodies(args.requests, args.max_new_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        base_dir, adapter_dir = build_models(Path(tmp))
        try:
            url = deploy(base_dir, adapter_dir, port, batch_size=args.concurrency)
            batched_s, batched_lat, batched_out, batches = send_all(url, work, args.concurrency)
            url = deploy(base_dir, adapter_dir, port, batch_size=1)  # same app, redeployed
            single_s, single_lat, single_out, singles = send_all(url, work, 1)
        finally:
            serve.shutdown()
    sizes = [size for size, _ in batches]
    figures = {
        "throughput_ratio": round(single_s / batched_s, 2),
        "p50_latency_ratio": round(percentile(batched_lat, 0.5) / percentile(single_lat, 0.5), 2),
        "batched_rps": round(args.requests / batched_s, 2),
        "sequential_rps": round(args.requests / single_s, 2),
        "batched_p50_ms": round(1000 * percentile(batched_lat, 0.5), 1),
        "batched_p95_ms": round(1000 * percentile(batched_lat, 0.95), 1),
        "sequential_p50_ms": round(1000 * percentile(single_lat, 0.5), 1),
        "sequential_p95_ms": round(1000 * percentile(single_lat, 0.95), 1),
        "mean_batch_size": round(statistics.mean(sizes), 2),
        "max_batch_size_seen": max(sizes),
        "sequential_max_batch_size": max(size for size, _ in singles),
        "batched_generate_s": round(sum(seconds for _, seconds in batches), 2),
        "sequential_generate_s": round(sum(seconds for _, seconds in singles), 2),
        "outputs_equal": batched_out == single_out,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_new_tokens": args.max_new_tokens,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    print(
        f"batched: {figures['batched_rps']} req/s "
        f"(p50 {figures['batched_p50_ms']} ms, p95 {figures['batched_p95_ms']} ms, "
        f"mean batch {figures['mean_batch_size']}); one at a time: {figures['sequential_rps']} req/s "
        f"(p50 {figures['sequential_p50_ms']} ms, p95 {figures['sequential_p95_ms']} ms)",
        file=sys.stderr,
    )
    print("batches (rows, s):", [(size, round(sec, 3)) for size, sec in batches], file=sys.stderr)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
