"""What an adapter looks like on disk, in one place: PAC-LoRA's and the peft LoRA baseline's.

    <adapter>/pac_lora_config.json          PAC-LoRA: its PACLoraConfig (`socialalign-pac-lora`, version 1)
    <adapter>/adapter_config.json           peft LoRA: peft's own LoraConfig
    <adapter>/adapter_model.safetensors     the adapter weights alone (either kind), nothing of the base model
    <adapter>/training_probe.safetensors    written by training: a row the model trained on and its logits

The config file tells the two kinds apart (`adapter_format`). A trained adapter carries a probe,
so that `verify_adapter` can check that the adapter reloaded on a fresh base model, as serving
loads it, computes what the trained model computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from pac_lora.base import load_base_model
from pac_lora.config import CONFIG_FILE, PACLoraConfig
from pac_lora.model import PACLoraModel, apply_pac_lora, load_adapter_weights
from pac_lora.prompt import IGNORE_INDEX

PAC_LORA, LORA = "pac_lora", "lora"  # the adapter kinds, named as the train stage's `method`
PAC_CONFIG_FILE = CONFIG_FILE
PEFT_CONFIG_FILE = "adapter_config.json"  # what peft's save_pretrained writes
WEIGHTS_FILE = "adapter_model.safetensors"
PROBE_FILE = "training_probe.safetensors"
PROBE_POSITIONS = 16
SPAN_KEYS = ("user_spans", "news_spans")
_KINDS = {PAC_CONFIG_FILE: PAC_LORA, PEFT_CONFIG_FILE: LORA}


def adapter_format(directory: str | Path) -> str | None:
    """"pac_lora" or "lora" by the config file in `directory`; None when it holds neither."""
    return next((kind for name, kind in _KINDS.items() if (Path(directory) / name).is_file()), None)


def save_adapter(model: PACLoraModel, directory: str | Path) -> Path:
    """Adapter-only safetensors plus the config as JSON; nothing of the base model."""
    return _write_pac_lora(model.adapter_state_dict(), model.pac_config, directory)


def export_adapter(model: nn.Module, tensors: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """Write a trained model's adapter in its own kind's format from `tensors`, every trainable
    parameter named as in `model.named_parameters()` (e.g. the optimizer's fp32 master copies)."""
    if isinstance(model, PACLoraModel):
        weights = {name.removeprefix("base_model."): tensor for name, tensor in tensors.items()}
        return _write_pac_lora(weights, model.pac_config, directory)
    # Only the LoRA tensors: never the (frozen) embeddings, even when lm_head is a target.
    model.save_pretrained(str(directory), state_dict=tensors, save_embedding_layers=False)
    return Path(directory)


def _write_pac_lora(tensors: dict[str, torch.Tensor], config: PACLoraConfig, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config.save(directory)
    return directory


def load_adapter(base_model: nn.Module, directory: str | Path) -> PACLoraModel:
    """Apply the saved config to `base_model` and load the saved experts and routers into it."""
    directory = Path(directory)
    config = PACLoraConfig.load(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: adapter weights missing (expected next to {PAC_CONFIG_FILE})")
    model = apply_pac_lora(base_model, config)
    load_adapter_weights(model, load_file(str(weights)), source=str(weights))
    return model


def load_lora_adapter(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """The peft LoRA baseline in `directory` on `base_model`, for inference (a peft PeftModel), in the
    base model's dtype: peft's default (`autocast_adapter_dtype=True`) would keep it in fp32 on a bf16
    base, while PAC-LoRA computes in the base's dtype and training ran in it too."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(directory), is_trainable=False, autocast_adapter_dtype=False)


def load_any_adapter(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """The adapter in `directory`, PAC-LoRA or peft LoRA, on `base_model`."""
    kind = adapter_format(directory)
    if kind == PAC_LORA:
        return load_adapter(base_model, directory)
    if kind == LORA:
        return load_lora_adapter(base_model, directory)
    raise FileNotFoundError(f"{directory} holds no adapter (neither {PAC_CONFIG_FILE} nor {PEFT_CONFIG_FILE})")


@dataclass(frozen=True)
class Probe:
    """The first row of a micro-batch the model trained on and the trained model's logits where it
    predicts its first response tokens: enough to check that a reloaded adapter is the trained one."""

    tensors: dict[str, torch.Tensor]
    dtype: torch.dtype  # what the trained model computed in

    @classmethod
    def of(cls, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> Probe:
        labels = batch["labels"][0]
        answered = (labels != IGNORE_INDEX).nonzero().flatten()
        start = max(int(answered[0]) - 1, 0) if len(answered) else 0
        length = int(batch["attention_mask"][0].sum())
        positions = torch.arange(start, min(start + PROBE_POSITIONS, length))
        tensors = {key: batch[key][:1, :length].cpu().contiguous() for key in ("input_ids", "attention_mask", "labels")}
        for key in SPAN_KEYS:
            tensors[key] = batch[key][:1].cpu().contiguous()
        tensors["positions"] = positions
        tensors["logits"] = logits[0, positions].float().cpu().contiguous()
        return cls(tensors, logits.dtype)

    def save(self, directory: str | Path) -> None:
        dtype = str(self.dtype).removeprefix("torch.")
        save_file(self.tensors, str(Path(directory) / PROBE_FILE), metadata={"dtype": dtype})


def verify_adapter(base_model: str | Path, adapter_dir: str | Path, dtype: torch.dtype | None = None) -> float:
    """Reload `adapter_dir` on a fresh base model, as serving would, and return the largest difference
    between its logits and the trained model's on the probe saved with the adapter. The reload
    computes in the training dtype unless `dtype` says otherwise (bf16 and fp32 logits differ by
    bf16's rounding, ~1e-2 of their size)."""
    path = Path(adapter_dir) / PROBE_FILE
    probe = load_file(str(path))
    base, _ = load_base_model(base_model, dtype=dtype or getattr(torch, _probe_dtype(path)))
    model = load_any_adapter(base, adapter_dir).eval()
    keys = ("input_ids", "attention_mask", *(SPAN_KEYS if isinstance(model, PACLoraModel) else ()))
    with torch.no_grad():
        logits = model(**{key: probe[key] for key in keys}).logits[0, probe["positions"]].float()
    return float((logits - probe["logits"]).abs().max())


def _probe_dtype(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get("dtype", "float32")
