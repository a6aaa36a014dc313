"""Persona extraction throughput: 500 calls to a local OpenAI-compatible server that answers in
100 ms, at concurrency 32, through the persona step of `socialalign build-dataset` (Ray Data actor,
the real `openai` client). The ceiling is 32 / 0.1 s = 320 calls/s; throughput is measured at the
server, from its first answer to its last (Ray start-up is not the endpoint's throughput).

Target: ceiling_fraction >= 0.8. Last line: one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from cluster.parquet import atomic_write_parquet, read_table_dir  # noqa: E402
from cluster.schemas import CASES, CLEAN_HISTORY, PERSONAS  # noqa: E402
from cluster.stage_config import RayConfig  # noqa: E402
from dataset_jobs.config import DatasetConfig  # noqa: E402
from dataset_jobs.steps import persona  # noqa: E402
from tests.fakes.openai_server import FakeLLM, FakeLLMConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()

    import ray

    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as work, FakeLLM(FakeLLMConfig(latency_s=args.latency)).running() as llm:
        out = Path(work)
        history = [{"user_id": f"u{u}", "mid": f"{u}-{i}", "text": f"第{i}条微博，用户{u}说今天很开心[哈哈]",
                    "retweet_text": None, "created_at": start + timedelta(hours=i)}
                   for u in range(args.calls) for i in range(5)]
        cases = [{"topic": "t", "news": "新闻", "user_id": f"u{u}", "user_name": f"用户{u}", "mid": f"c{u}",
                  "output": "x", "created_at": start + timedelta(days=1)} for u in range(args.calls)]
        for name, rows, schema in (("history", history, CLEAN_HISTORY), ("cases", cases, CASES)):
            (out / "clean" / name).mkdir(parents=True)
            atomic_write_parquet(pa.Table.from_pylist(rows, schema=schema), out / "clean" / name / "part-000.parquet")
        config = DatasetConfig(
            output_dir=out, ray=RayConfig(include_dashboard=False),
            persona={"base_url": llm.base_url, "model": "fake-persona-1", "concurrency": args.concurrency},
        )
        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
        try:
            began = time.perf_counter()
            report = persona.build(config, out, out)
            wall = time.perf_counter() - began
        finally:
            ray.shutdown()
        personas = read_table_dir(out / "personas", PERSONAS)
        calls = llm.calls
    served = calls.by_status[200]
    rate = (served - 1) / (calls.last_at - calls.first_at) if served > 1 else 0.0
    ceiling = args.concurrency / args.latency
    figures = {
        "ceiling_fraction": rate / ceiling,
        "calls_per_s": rate,
        "ceiling_calls_per_s": ceiling,
        "calls": calls.total,
        "personas": personas.num_rows,
        "prompt_tokens": report["prompt_tokens"],
        "completion_tokens": report["completion_tokens"],
        "step_wall_seconds": wall,
    }
    print(f"{rate:.0f} calls/s of a {ceiling:.0f} calls/s ceiling; the whole step took {wall:.1f}s", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
