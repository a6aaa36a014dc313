"""What a worker trains: PAC-LoRA or the peft LoRA baseline on a local base model.

Both methods take the same prompts and the same rank, alpha, dropout and target modules
(`TrainConfig.adapter`); only PAC-LoRA reads the user and news spans. The adapter written at
each checkpoint holds the fp32 master weights (what the optimizer updates), gathered from every
ZeRO-2 or ZeRO-3 partition, in its method's own format (`pac_lora.export_adapter`).
With `gradient_checkpointing` both recompute each decoder layer in the backward pass (non-reentrant):
PAC-LoRA through its own method, which puts each call's routing spans back for the recomputation.
"""

from __future__ import annotations

import torch
from torch import nn

from pac_lora import apply_pac_lora, load_base_model
from train_jobs.config import TrainConfig

SPAN_KEYS = ("user_spans", "news_spans")


def build_model(config: TrainConfig, dtype: torch.dtype) -> nn.Module:
    """The base model with only the adapter trainable: a PACLoraModel, or a peft PeftModel for `lora`."""
    base, _tokenizer = load_base_model(config.base_model, dtype=dtype)
    shape = config.adapter
    if config.method == "pac_lora":
        model = apply_pac_lora(base, shape)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=shape.r,
        lora_alpha=int(shape.alpha) if shape.alpha.is_integer() else shape.alpha,  # peft declares an int
        lora_dropout=shape.dropout,
        target_modules=list(shape.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    if config.gradient_checkpointing:
        checkpoint_layers(base)
    return model


def checkpoint_layers(model: nn.Module) -> None:
    """transformers' own activation checkpointing, non-reentrant (the frozen embeddings need no
    gradient then), without its deprecation warning; the KV cache off, as its Trainer would."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    model.config.use_cache = False


def model_inputs(method: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch as the model's forward takes it: the LoRA baseline has no use for spans."""
    if method == "pac_lora":
        return batch
    return {key: value for key, value in batch.items() if key not in SPAN_KEYS}


def full_trainable_fp32(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter as a full fp32 CPU tensor, from the optimizer's master copy.

    A collective under ZeRO (partitions are gathered): every rank must call it, in the same order.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        full = safe_get_full_fp32_param(param)
        tensors[name] = (full if full is not None else param.detach()).float().cpu().clone()
    return tensors
