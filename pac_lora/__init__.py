"""PAC-LoRA on stock transformers: the model side that training and serving share.

    base, tokenizer = load_base_model("models/Qwen2.5-7B-Instruct")   # a local directory, never downloaded
    model = apply_pac_lora(base, PACLoraConfig())
    batch = collate([build_prompt(tokenizer, user, news, instruction, response)], tokenizer.pad_token_id)
    loss = model(**batch).loss
    save_adapter(model, "adapter/"); model = load_adapter(fresh_base_model, "adapter/")

Modules: `config` (PACLoraConfig), `layer` and `routing` (the math), `model` (injection into a
base model), `prompt` (prompts, spans, collation), `base` (loading a local base model),
`adapters` (the adapter files of PAC-LoRA and the peft LoRA baseline), `gates` (expert gate
weights read out of a prefill), `research` (the research code's adapters), `tiny` (tiny
checkpoints for tests and the demo). Names resolve lazily, so importing `pac_lora.config` (a
`--help`) never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PACLoraConfig": "pac_lora.config",
    "PACLoraModel": "pac_lora.model",
    "ParameterSummary": "pac_lora.model",
    "adapter_parameter_counts": "pac_lora.model",
    "apply_pac_lora": "pac_lora.model",
    "parameter_summary": "pac_lora.model",
    "GATE_DETAILS": "pac_lora.gates",
    "GateDetail": "pac_lora.config",
    "GateRecord": "pac_lora.gates",
    "IGNORE_INDEX": "pac_lora.prompt",
    "SYSTEM_PROMPT": "pac_lora.prompt",
    "VARIANTS": "pac_lora.prompt",
    "PromptEncoding": "pac_lora.prompt",
    "PromptParts": "pac_lora.prompt",
    "PromptTooLong": "pac_lora.prompt",
    "build_prompt": "pac_lora.prompt",
    "collate": "pac_lora.prompt",
    "format_history_post": "pac_lora.prompt",
    "research_prompt_parts": "pac_lora.prompt",
    "load_base_model": "pac_lora.base",
    "load_tokenizer": "pac_lora.base",
    "model_dir": "pac_lora.base",
    "PAC_LORA": "pac_lora.adapters",
    "LORA": "pac_lora.adapters",
    "PAC_CONFIG_FILE": "pac_lora.adapters",
    "PEFT_CONFIG_FILE": "pac_lora.adapters",
    "PROBE_FILE": "pac_lora.adapters",
    "Probe": "pac_lora.adapters",
    "adapter_format": "pac_lora.adapters",
    "export_adapter": "pac_lora.adapters",
    "load_adapter": "pac_lora.adapters",
    "load_any_adapter": "pac_lora.adapters",
    "load_lora_adapter": "pac_lora.adapters",
    "save_adapter": "pac_lora.adapters",
    "verify_adapter": "pac_lora.adapters",
    "load_research_adapter": "pac_lora.research",
    "build_tiny_checkpoint": "pac_lora.tiny",
    "pretrain_tiny_lm": "pac_lora.tiny",
    "train_tokenizer": "pac_lora.tiny",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pac_lora' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
