"""PAC-LoRA on stock transformers: the model side that training and serving share.

    model = apply_pac_lora(base_model, PACLoraConfig())
    batch = collate([build_prompt(tokenizer, user, news, instruction, response)], tokenizer.pad_token_id)
    loss = model(**batch).loss
    save_adapter(model, "adapter/"); model = load_adapter(fresh_base_model, "adapter/")
"""

from pac_lora.config import PACLoraConfig
from pac_lora.model import (
    PACLoraModel,
    ParameterSummary,
    adapter_parameter_counts,
    apply_pac_lora,
    load_adapter,
    load_research_adapter,
    parameter_summary,
    save_adapter,
)
from pac_lora.prompt import (
    SYSTEM_PROMPT,
    VARIANTS,
    PromptEncoding,
    PromptParts,
    PromptTooLong,
    build_prompt,
    collate,
    format_history_post,
    research_prompt_parts,
)
from pac_lora.tiny import build_tiny_checkpoint, load_base_model, train_tokenizer

__all__ = [
    "SYSTEM_PROMPT",
    "PACLoraConfig",
    "PACLoraModel",
    "ParameterSummary",
    "PromptEncoding",
    "PromptParts",
    "VARIANTS",
    "PromptTooLong",
    "adapter_parameter_counts",
    "apply_pac_lora",
    "build_prompt",
    "build_tiny_checkpoint",
    "collate",
    "format_history_post",
    "load_adapter",
    "load_base_model",
    "load_research_adapter",
    "parameter_summary",
    "research_prompt_parts",
    "save_adapter",
    "train_tokenizer",
]
