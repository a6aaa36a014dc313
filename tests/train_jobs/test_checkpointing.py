"""`gradient_checkpointing: true` in the train stage: the model build_model returns recomputes its
decoder layers in the backward pass, and a short run through Ray Train + DeepSpeed (1 CPU worker,
2 optimizer steps of 2 micro-batches) starts from the same loss as without, for PAC-LoRA (whose
routing spans must come back for each recomputation) and the peft LoRA baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from train_jobs.job import train
from train_jobs.model import build_model, model_inputs

from .conftest import train_config


@pytest.mark.parametrize("method", ["pac_lora", "lora"])
def test_build_model_turns_checkpointing_on_only_when_asked(
    method: str, tiny_model: Path, sft_dir: Path, tmp_path: Path
) -> None:
    for enabled in (False, True):
        config = train_config(tiny_model, sft_dir, tmp_path, method=method, gradient_checkpointing=enabled)
        model = build_model(config, torch.float32)
        hf_model = model.base_model if method == "pac_lora" else model.get_base_model()
        assert hf_model.is_activation_checkpointing is enabled, (method, enabled)
        assert hf_model.config.use_cache is not enabled
        checkpoint_fn = hf_model.model.layers[0]._gradient_checkpointing_func if enabled else None
        if enabled:  # non-reentrant: the only kind that takes PAC-LoRA's context_fn and needs no input grads
            assert checkpoint_fn.keywords["use_reentrant"] is False


@pytest.mark.usefixtures("ray_local", "train_env")
@pytest.mark.parametrize("method", ["pac_lora", "lora"])
def test_a_run_with_checkpointing_trains_from_the_same_first_loss(
    method: str, tiny_model: Path, sft_dir: Path, tmp_path: Path
) -> None:
    summaries = {}
    for enabled in (False, True):
        config = train_config(
            tiny_model, sft_dir, tmp_path / f"gc-{enabled}", method=method, gradient_checkpointing=enabled,
            num_workers=1, micro_batch_size=2, effective_batch_size=4, max_steps=2, checkpoint_every_steps=2,
            log_every_steps=1,
        )
        summaries[enabled] = train(config, progress=False)
    plain, checkpointed = summaries[False], summaries[True]
    assert checkpointed.steps == plain.steps == 2
    assert math.isfinite(checkpointed.first_loss) and math.isfinite(checkpointed.final_loss)
    # The same rows, adapter initialisation and dropout masks (checkpointing restores the RNG state
    # for the recomputation), so the first optimizer step's loss is the same.
    assert checkpointed.first_loss == pytest.approx(plain.first_loss, rel=1e-5)
    assert checkpointed.adapter_dir.is_dir()


def test_pac_lora_backward_under_checkpointing_reaches_every_adapter_parameter(
    tiny_model: Path, sft_dir: Path, tmp_path: Path
) -> None:
    """The worker's micro-step (forward, backward) on a PAC-LoRA model built with checkpointing on."""
    from pac_lora import build_prompt, collate
    from train_jobs.data import load_tokenizer

    config = train_config(tiny_model, sft_dir, tmp_path, gradient_checkpointing=True)
    model = build_model(config, torch.float32).train()
    tokenizer = load_tokenizer(str(tiny_model))
    batch = collate([build_prompt(tokenizer, "用户名：甲\n", "新闻：乙\n", "请发微博。", "好")], tokenizer.pad_token_id)
    with torch.no_grad():  # non-zero compose experts, so that the analyze experts get gradient too
        for name, param in model.named_parameters():
            if name.endswith(".compose"):
                param.normal_(std=0.02)
    model(**model_inputs("pac_lora", batch)).loss.backward()
    missing = [name for name, param in model.named_parameters() if param.requires_grad and param.grad is None]
    assert not missing
