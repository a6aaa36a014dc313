"""Checkpoints: what resuming needs, plus the adapter itself, in one directory reported to Ray Train.

    <checkpoint>/deepspeed/<tag>/...   every rank's ZeRO partitions: trainable weights, AdamW state,
                                       LR schedule (frozen base weights left out)
    <checkpoint>/deepspeed/latest      the tag
    <checkpoint>/train_state.json      step, tokens and time so far (rank 0)
    <checkpoint>/adapter/              the adapter in its method's format, loadable as is, with the
                                       training probe at the end of the run (rank 0; `pac_lora.adapters`)

Every rank writes into its own local directory and reports it; Ray Train merges them into one
checkpoint in storage, and gives the latest one back to restarted or resumed workers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pac_lora import Probe, export_adapter
from train_jobs.model import full_trainable_fp32

DEEPSPEED_DIR = "deepspeed"
STATE_FILE = "train_state.json"
ADAPTER_DIR = "adapter"


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(engine: Any, state: dict[str, Any], directory: Path, rank: int, probe: Probe | None = None) -> None:
    """Every rank calls this (ZeRO saves and gathers are collectives); rank 0 writes the adapter."""
    tag = tag_for(state["step"])
    engine.save_checkpoint(
        str(directory / DEEPSPEED_DIR), tag=tag, client_state={"train_state": state}, exclude_frozen_parameters=True
    )
    model: nn.Module = engine.module
    tensors = full_trainable_fp32(model)
    if rank != 0:
        return
    adapter_dir = export_adapter(model, tensors, directory / ADAPTER_DIR)
    if probe is not None:
        probe.save(adapter_dir)
    (directory / STATE_FILE).write_text(json.dumps({**state, "tag": tag}, indent=2) + "\n", encoding="utf-8")


def load_checkpoint(engine: Any, directory: Path) -> dict[str, Any]:
    """Restore weights, optimizer and schedule into `engine` (every rank); returns the train state."""
    state = read_state(directory)
    try:
        loaded, _client = engine.load_checkpoint(
            str(directory / DEEPSPEED_DIR), tag=state["tag"], load_module_strict=False
        )
    except RuntimeError as error:
        if "size mismatch" not in str(error) and "state_dict" not in str(error):
            raise
        raise RuntimeError(
            f"{directory}: this run's checkpoint does not fit the model being trained (another base model or "
            "adapter config?): start a new run (another run_name or output_dir) or remove the old checkpoints"
        ) from error
    if loaded is None:
        raise RuntimeError(f"{directory}: DeepSpeed found no checkpoint {state['tag']} to load")
    return state


def read_state(directory: Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuntimeError(f"{path}: not a train_jobs checkpoint (no {STATE_FILE})") from None


def adapter_weights_from_zero(directory: str | Path) -> dict[str, torch.Tensor]:
    """The fp32 trainable weights recovered offline from a checkpoint's ZeRO-2 or ZeRO-3 files
    (names as in the trained model), e.g. to rebuild an adapter from the DeepSpeed state alone."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = read_state(Path(directory))
    weights = get_fp32_state_dict_from_zero_checkpoint(
        str(Path(directory) / DEEPSPEED_DIR), tag=state["tag"], exclude_frozen_parameters=True
    )
    return {name: tensor.float() for name, tensor in weights.items()}
