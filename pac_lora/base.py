"""The base model and its tokenizer, from a local Hugging Face directory; nothing is ever downloaded.

A real Qwen2.5-7B-Instruct directory and a tiny checkpoint written by `build_tiny_checkpoint` go
through the same `AutoModelForCausalLM` / `AutoTokenizer` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def model_dir(path: str | Path) -> Path:
    """`path` as a directory, once it is known to hold a Hugging Face model (its config.json)."""
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a local Hugging Face model directory (no config.json)")
    return directory


def load_tokenizer(path: str | Path) -> Any:
    """The model's tokenizer, padding with its end-of-sequence token when it names no pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir(path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    path: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer); `dtype` None keeps the checkpoint's own."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(model_dir(path), local_files_only=True, dtype=dtype or "auto")
    if device is not None:
        model.to(device)
    return model, tokenizer
