"""What a worker trains: PAC-LoRA or the peft LoRA baseline on a local base model, and the adapter files.

Both methods take the same prompts and the same rank, alpha, dropout and target modules; only
PAC-LoRA reads the user and news spans. The adapter written at each checkpoint holds the fp32
master weights (what the optimizer updates), gathered from every ZeRO-2 or ZeRO-3 partition:
`pac_lora.load_adapter` reads the PAC-LoRA one, `peft.PeftModel.from_pretrained` the LoRA one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cluster.config import ConfigError
from train_jobs.config import TrainConfig
from pac_lora import PACLoraConfig, apply_pac_lora, load_base_model, save_adapter

SPAN_KEYS = ("user_spans", "news_spans")
PROBE_FILE = "training_probe.safetensors"
PROBE_POSITIONS = 16


def adapter_config(config: TrainConfig) -> PACLoraConfig:
    """The adapter's shape from the YAML `adapter:` mapping (PACLoraConfig's defaults otherwise)."""
    try:
        return PACLoraConfig.from_dict(dict(config.adapter))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"adapter: {error}") from None


def build_model(config: TrainConfig, dtype: torch.dtype) -> nn.Module:
    """The base model with only the adapter trainable: a PACLoraModel, or a peft PeftModel for `lora`."""
    base, _tokenizer = load_base_model(config.base_model, dtype=dtype)
    shape = adapter_config(config)
    if config.method == "pac_lora":
        return apply_pac_lora(base, shape)
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=shape.r,
        lora_alpha=shape.alpha,
        lora_dropout=shape.dropout,
        target_modules=list(shape.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


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


def save_adapter_files(model: nn.Module, method: str, tensors: dict[str, torch.Tensor], directory: Path) -> Path:
    """Write the adapter in its method's own format from `full_trainable_fp32` tensors."""
    if method == "pac_lora":
        prefix = "base_model."
        weights = {name.removeprefix(prefix): tensor for name, tensor in tensors.items()}
        return save_adapter(_ExportedAdapter(weights, model.pac_config), directory)
    # Only the LoRA tensors: never the (frozen) embeddings, even when lm_head is a target.
    model.save_pretrained(str(directory), state_dict=tensors, save_embedding_layers=False)
    return directory


class _ExportedAdapter:
    """What `pac_lora.save_adapter` reads from a model: the adapter tensors and the config."""

    def __init__(self, tensors: dict[str, torch.Tensor], config: PACLoraConfig) -> None:
        self._tensors = tensors
        self.pac_config = config

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return self._tensors


@dataclass(frozen=True)
class Probe:
    """The first row of a micro-batch the model trained on and the trained model's logits where it
    predicts its first response tokens: enough to check that a reloaded adapter is the trained one."""

    tensors: dict[str, torch.Tensor]
    dtype: torch.dtype  # what the trained model computed in

    @classmethod
    def of(cls, batch: dict[str, torch.Tensor], logits: torch.Tensor) -> Probe:
        labels = batch["labels"][0]
        answered = (labels != -100).nonzero().flatten()
        start = max(int(answered[0]) - 1, 0) if len(answered) else 0
        length = int(batch["attention_mask"][0].sum())
        positions = torch.arange(start, min(start + PROBE_POSITIONS, length))
        tensors = {key: batch[key][:1, :length].cpu().contiguous() for key in ("input_ids", "attention_mask", "labels")}
        for key in SPAN_KEYS:
            tensors[key] = batch[key][:1].cpu().contiguous()
        tensors["positions"] = positions
        tensors["logits"] = logits[0, positions].float().cpu().contiguous()
        return cls(tensors, logits.dtype)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        dtype = str(self.dtype).removeprefix("torch.")
        save_file(self.tensors, str(Path(directory) / PROBE_FILE), metadata={"dtype": dtype})


def verify_adapter(base_model: str | Path, adapter_dir: str | Path, dtype: torch.dtype | None = None) -> float:
    """Reload `adapter_dir` on a fresh base model, as serving would, and return the largest difference
    between its logits and the trained model's on the probe saved with the adapter. The reload
    computes in the training dtype unless `dtype` says otherwise (bf16 and fp32 logits differ by
    bf16's rounding, ~1e-2 of their size)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(adapter_dir) / PROBE_FILE
    probe = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        trained = (handle.metadata() or {}).get("dtype", "float32")
    base, _ = load_base_model(base_model, dtype=dtype or getattr(torch, trained))
    if (Path(adapter_dir) / "pac_lora_config.json").is_file():
        from pac_lora import load_adapter

        model = load_adapter(base, adapter_dir).eval()
        inputs = {key: probe[key] for key in ("input_ids", "attention_mask", *SPAN_KEYS)}
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        inputs = {key: probe[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits[0, probe["positions"]].float()
    return float((logits - probe["logits"]).abs().max())
