"""bench/gpu.py cannot rot on a CPU machine: its --dry-run runs the whole bench (build, train through
DeepSpeed, serve through serve.engine) on a tiny model and must print every figure; without a GPU
and without --dry-run it says it was skipped and exits 0 (`make bench`); a case out of time is
skipped and a failing case is named while the others run. The dry run trains with activation
checkpointing on, through the train stage's `gradient_checkpointing` (its loss and gradients are
checked against training without in tests/pac_lora/test_checkpointing.py)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu.py"


def load_bench() -> Any:
    """bench/gpu.py as a module (bench/ is not a package); registered first, as its dataclasses need."""
    if "bench_gpu" in sys.modules:
        return sys.modules["bench_gpu"]
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, timeout: float) -> tuple[dict[str, Any], str]:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def numbers(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every leaf of the JSON object with its path (None leaves included, so they can be caught)."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in numbers(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in numbers(item, f"{path}[{index}]")]
    return [(path, value)]


def test_dry_run_prints_every_figure_as_a_finite_number() -> None:
    figures, stderr = run_script("--dry-run", timeout=850)
    required = ["pac_vs_lora_train_step", "pac_token_vs_lora_train_step", "peak_mem_gb"]
    required += [f"{pair}_decode_b{size}" for pair in ("pac_vs_lora", "lora_vs_base", "pac_vs_base")
                 for size in (1, 8, 32)]
    assert [key for key in required if key not in figures] == []
    assert list(figures)[0] == "pac_vs_lora_train_step"  # ratios first
    assert figures["failed_cases"] == {} and figures["skipped_cases"] == [], stderr[-4000:]
    assert set(figures["train"]) == {"pac_lora_sequence", "pac_lora_token", "lora"}
    assert set(figures["serve"]) == {f"{name}_b{size}" for name in ("base", "lora", "pac_lora") for size in (1, 8, 32)}
    assert set(figures["peak_mem_gb"]) == {f"train_{case}" for case in figures["train"]} | {
        f"serve_{case}" for case in figures["serve"]}
    assert all(case["freed"] is True for case in figures["train"].values())  # no model outlives its case
    assert all(case["tokens_per_step"] == 1024 for case in figures["train"].values())
    leaves = numbers({key: value for key, value in figures.items() if key not in ("skipped_cases", "failed_cases")})
    assert [path for path, value in leaves if value is None] == []
    bad = [(path, value) for path, value in leaves
           if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value)]
    assert bad == []
    ratios = [key for key in figures if key.endswith(("_train_step", "_decode_b1", "_decode_b8", "_decode_b32"))]
    assert len(ratios) == 11 and all(figures[key] > 0 for key in ratios)
    env = figures["env"]
    assert env["torch"] == torch.__version__ and env["cuda"] and env["gpu"]
    assert figures["setup"]["dry_run"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the full bench would run")
def test_without_a_gpu_it_says_skipped_and_exits_0() -> None:
    figures, stderr = run_script(timeout=300)
    assert "no CUDA device" in figures["skipped"] and figures["dry_run"] is False
    assert "skipped" in stderr


def test_a_case_out_of_time_is_skipped_and_a_failing_case_is_named() -> None:
    bench = load_bench()
    run = bench.Run(budget_s=60.0)

    def fails() -> dict[str, Any]:
        raise RuntimeError("CUDA out of memory (injected)")

    assert bench.run_case(run, "broken", fails) is None
    assert bench.run_case(run, "fine", lambda: {"step_s": 1.0}) == {"step_s": 1.0}
    assert run.failed == {"broken": "RuntimeError: CUDA out of memory (injected)"}
    run.budget_s = 0.0
    assert bench.run_case(run, "late", lambda: {"step_s": 1.0}) is None
    assert run.skipped == ["late"]
    sizes = bench.Sizes(shape=bench.DRY_RUN_SHAPE, warmup_steps=1, train_steps=1, new_tokens=4, calls=1, budget_s=0)
    result = bench.report(run, sizes, gpu=False, checkpointing=True, build_s=1.0)
    assert result["pac_vs_lora_train_step"] is None and result["pac_vs_lora_decode_b32"] is None
    assert result["failed_cases"] == {"broken": "RuntimeError: CUDA out of memory (injected)"}
    assert result["skipped_cases"] == ["late"]
