"""`gradient_checkpointing: true` in the train stage: the model build_model returns recomputes its
decoder layers in the backward pass, and a short run through Ray Train + DeepSpeed (1 CPU worker,
1 optimizer step of 2 micro-batches) has the same loss as without, for PAC-LoRA (whose routing
spans must come back for each recomputation; ZeRO-2 and ZeRO-3) and the peft LoRA baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from train_jobs.job import train
from train_jobs.model import build_model, model_inputs
from train_jobs.summary import TrainSummary

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


def short_run(model: Path, sft: Path, output: Path, method: str, enabled: bool, zero_stage: int = 2) -> TrainSummary:
    """One optimizer step of 2 micro-batches of 2 rows on 1 worker."""
    config = train_config(
        model, sft, output / f"{method}-gc-{enabled}-zero{zero_stage}", method=method,
        gradient_checkpointing=enabled, zero_stage=zero_stage, num_workers=1, micro_batch_size=2,
        effective_batch_size=4, max_steps=1, checkpoint_every_steps=1, log_every_steps=1,
    )
    return train(config, progress=False)


@pytest.fixture(scope="module")
def plain_runs(tiny_model: Path, sft_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainSummary]:
    output = tmp_path_factory.mktemp("plain")
    return {method: short_run(tiny_model, sft_dir, output, method, False) for method in ("pac_lora", "lora")}


@pytest.mark.usefixtures("ray_local", "train_env")
@pytest.mark.timeout(900)  # minutes on a loaded 2-core machine: Ray Train starts for each run
@pytest.mark.parametrize(("method", "zero_stage"), [("pac_lora", 2), ("pac_lora", 3), ("lora", 2)])
def test_a_run_with_checkpointing_trains_from_the_same_first_loss(
    method: str, zero_stage: int, plain_runs: dict[str, TrainSummary], tiny_model: Path, sft_dir: Path,
    tmp_path: Path,
) -> None:
    """PAC-LoRA also under ZeRO-3, which gathers each module's parameters again for the recomputation."""
    run = short_run(tiny_model, sft_dir, tmp_path, method, True, zero_stage)
    plain = plain_runs[method]
    assert run.steps == plain.steps == 1
    assert math.isfinite(run.first_loss)
    # The same rows, adapter initialisation and dropout masks (checkpointing restores the RNG state
    # for the recomputation), so the step's loss is the same.
    assert run.first_loss == pytest.approx(plain.first_loss, rel=1e-5), (run.first_loss, plain.first_loss)
    assert run.adapter_dir.is_dir()


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
