#!/usr/bin/env bash
# PAC-LoRA vs the peft LoRA baseline on one lent GPU: tokens/s and peak GPU memory through the
# whole Ray Train + DeepSpeed loop (1 worker, bf16, ZeRO-2), on a Qwen2.5-0.5B-shaped model built
# from its config (random weights, nothing downloaded), STEPS optimizer steps per method.
#
#   bench/train_gpu.sh                 # 50 steps each; last line: one JSON object, ratios first
#   STEPS=20 bench/train_gpu.sh
#
# Needs the project's venv (.venv, or PYTHON=...) with a CUDA build of torch. The first run of a
# fresh machine spends most of its time starting Ray and building the model (~1 GB in bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
STEPS="${STEPS:-50}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "bench/train_gpu.sh: no NVIDIA GPU visible (nvidia-smi)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device (CPU-only build?)")'

export RAY_USAGE_STATS_ENABLED=0
# DeepSpeed's JIT ops (none are needed with torch AdamW, but keep any build out of $HOME).
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec "$PYTHON" bench/train.py --gpu --steps "$STEPS" --rounds 1 "$@"
