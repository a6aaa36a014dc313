"""Training throughput of PAC-LoRA (sequence routing) against the peft LoRA baseline, through the
whole Ray Train + DeepSpeed loop (`train_jobs.train`): data shard, collation, forward, backward,
ZeRO-2 step, metrics.

CPU (default): 1 worker, fp32, a seeded Qwen2-shaped model (hidden 256, intermediate 688, 4
layers) built here, the synthetic SFT set with 5 history posts per prompt. The tokenizer is not
fitted to the bench prompts, so they encode to ~550 tokens, the length of a research prompt (5
history posts, persona, news, rules) under Qwen's tokenizer; a tokenizer fitted to the synthetic
text would shrink them to ~110 tokens and overstate PAC-LoRA's per-sequence costs. The two
methods run alternately `--rounds` times in one process on the same local Ray and each keeps its
best round (neighbours on a shared machine only ever slow a round down). tokens/s = tokens
trained / time inside the optimizer steps (checkpoint writes and worker start-up excluded), as the
stage itself reports it.

`--gpu` (run by bench/train_gpu.sh on a lent GPU): a Qwen2.5-0.5B-shaped model built from its
config (no download), bf16, ZeRO-2, `--steps` optimizer steps per method; adds peak GPU memory.

Target: pac_vs_lora_tokens_per_s >= 0.75. Last line: one JSON object of the figures, ratios first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray Train hands the driver one report per poll; poll faster than its 2 s default for short runs.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

from cluster.logs import setup_logging
from cluster.ray_connect import ray_session
from cluster.stage_config import RayConfig
from train_jobs.config import TrainConfig

CPU_SHAPE = {"hidden_size": 256, "intermediate_size": 688, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
# Qwen2.5-0.5B (config.json of Qwen/Qwen2.5-0.5B-Instruct), built from config with random weights.
QWEN25_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
METHODS = ("pac_lora", "lora")


def build_cpu_model(directory: Path) -> Path:
    """The tiny checkpoint's tokenizer learns from its own seed text only (see the module doc)."""
    from pac_lora import build_tiny_checkpoint

    return build_tiny_checkpoint(directory, **CPU_SHAPE)


def build_qwen25_05b(directory: Path) -> Path:
    """Qwen2.5-0.5B's architecture with random bf16 weights and a small local byte-level tokenizer
    (ids < vocab; not fitted to the bench prompts, so they keep a research prompt's length)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from pac_lora import train_tokenizer

    tokenizer = train_tokenizer()
    config = Qwen2Config(
        **QWEN25_05B,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def bench_config(args: argparse.Namespace, model: Path, sft: Path, output: Path, method: str, run: int) -> TrainConfig:
    common: dict[str, Any] = {
        "base_model": str(model),
        "sft_path": sft,
        "output_dir": output,
        "run_name": f"{method}-{run}",
        "method": method,
        "num_workers": 1,
        "zero_stage": 2,
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "checkpoint_every_steps": args.steps,
        "log_every_steps": args.steps,
        "max_length": 1024,
        "ray": RayConfig(include_dashboard=False, object_store_memory_mb=1024),
        "log_level": "WARNING",
    }
    if args.gpu:
        return TrainConfig(**common, use_gpu=True, micro_batch_size=8, effective_batch_size=32)
    return TrainConfig(**common, micro_batch_size=2, effective_batch_size=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="one GPU, Qwen2.5-0.5B shape, bf16")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (CPU 10, GPU 50)")
    parser.add_argument("--rounds", type=int, default=None, help="runs per method, best kept (CPU 2, GPU 1)")
    args = parser.parse_args()
    args.steps = args.steps or (50 if args.gpu else 10)
    args.rounds = args.rounds or (1 if args.gpu else 2)
    setup_logging("WARNING")
    logging.getLogger("train_jobs").setLevel(logging.WARNING)
    if not args.gpu:  # building the model here loads DeepSpeed, which would warn that it found no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")

    import torch

    from train_jobs import train
    from train_jobs.synthetic import (
        synthetic_sft_rows,
        write_synthetic_sft,
    )

    if args.gpu and not torch.cuda.is_available():
        sys.exit("bench/train.py --gpu: no CUDA device visible to torch")
    rows = synthetic_sft_rows(history_posts=5, copies=16 if args.gpu else 1)
    figures: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        scratch_dir = Path(scratch)
        builder = build_qwen25_05b if args.gpu else build_cpu_model
        model = builder(scratch_dir / "model")
        sft = write_synthetic_sft(scratch_dir / "sft", rows)
        with ray_session(RayConfig(include_dashboard=False, object_store_memory_mb=1024)):
            for run in range(args.rounds):
                for method in METHODS:
                    config = bench_config(args, model, sft, scratch_dir / "out", method, run)
                    fit_began = time.monotonic()
                    summary = train(config, progress=False)
                    figure = {
                        "tokens_per_s": summary.tokens_per_s,
                        "step_time_s": summary.train_seconds / summary.steps,
                        "tokens": summary.tokens,
                        "fit_s": time.monotonic() - fit_began,
                        "final_loss": summary.final_loss,
                        "peak_memory_gb": summary.metrics.get("peak_memory_gb", float("nan")),
                        "threads": summary.metrics.get("torch_threads"),
                    }
                    figures[method].append(figure)
                    print(
                        f"{method:<9} round {run}: {figure['tokens_per_s']:,.0f} tokens/s, "
                        f"{figure['step_time_s']:.3f} s/step, {summary.tokens:,} tokens, fit {figure['fit_s']:.1f}s",
                        file=sys.stderr,
                    )
    best = {method: max(runs, key=lambda f: f["tokens_per_s"]) for method, runs in figures.items()}
    pac, lora = best["pac_lora"], best["lora"]
    tokens_per_row = pac["tokens"] / (args.steps * (32 if args.gpu else 4))
    shape = "Qwen2.5-0.5B shape, bf16" if args.gpu else (
        f"qwen2 hidden {CPU_SHAPE['hidden_size']} x {CPU_SHAPE['num_layers']} layers, fp32, "
        f"{pac['threads']} torch thread(s) in the worker"
    )
    result: dict[str, Any] = {
        "pac_vs_lora_tokens_per_s": pac["tokens_per_s"] / lora["tokens_per_s"],
        "pac_lora_tokens_per_s": pac["tokens_per_s"],
        "lora_tokens_per_s": lora["tokens_per_s"],
        "pac_lora_step_time_s": pac["step_time_s"],
        "lora_step_time_s": lora["step_time_s"],
        "tokens_per_run": pac["tokens"],
        "tokens_per_row": tokens_per_row,
        "steps": args.steps,
        "rounds": args.rounds,
        "pac_lora_fit_s": pac["fit_s"],
        "lora_fit_s": lora["fit_s"],
        "total_s": time.monotonic() - began,
        "shape": shape,
        "device": torch.cuda.get_device_name() if args.gpu else "cpu, 1 Ray Train worker, ZeRO-2",
    }
    if args.gpu:
        result["pac_lora_peak_memory_gb"] = pac["peak_memory_gb"]
        result["lora_peak_memory_gb"] = lora["peak_memory_gb"]
        result["pac_vs_lora_peak_memory"] = pac["peak_memory_gb"] / lora["peak_memory_gb"]
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
