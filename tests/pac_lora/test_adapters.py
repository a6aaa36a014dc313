"""The adapter files of both kinds: telling them apart, exporting trained tensors, the probe check;
and the base-model directory check. The library's names resolve without loading torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from pac_lora import (
    PROBE_FILE,
    PACLoraConfig,
    PACLoraModel,
    Probe,
    adapter_format,
    apply_pac_lora,
    export_adapter,
    load_any_adapter,
    load_base_model,
    model_dir,
    save_adapter,
    verify_adapter,
)
from tests.conftest import REPO

from .conftest import batch_of, randomize_adapter


def logits(model, batch, spans: bool = True) -> torch.Tensor:
    keys = ("input_ids", "attention_mask", *(("user_spans", "news_spans") if spans else ()))
    with torch.no_grad():
        return model(**{key: batch[key] for key in keys}).logits


def trained_pac(tiny_qwen) -> PACLoraModel:
    model = apply_pac_lora(load_base_model(tiny_qwen)[0], PACLoraConfig(dropout=0.0))
    randomize_adapter(model, scale=0.3)
    return model.eval()


def trained_lora(tiny_qwen):
    lora = get_peft_model(load_base_model(tiny_qwen)[0], LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return lora.eval()


def trainable(model) -> dict[str, torch.Tensor]:
    """What training hands to `export_adapter`: every trainable parameter, named as in the model."""
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def test_the_config_file_tells_the_kinds_apart(tiny_qwen, tmp_path) -> None:
    save_adapter(trained_pac(tiny_qwen), tmp_path / "pac")
    trained_lora(tiny_qwen).save_pretrained(str(tmp_path / "lora"))
    assert adapter_format(tmp_path / "pac") == "pac_lora"
    assert adapter_format(tmp_path / "lora") == "lora"
    assert adapter_format(tiny_qwen) is None
    with pytest.raises(FileNotFoundError, match="holds no adapter .*pac_lora_config.json.*adapter_config.json"):
        load_any_adapter(load_base_model(tiny_qwen)[0], tiny_qwen)


@pytest.mark.parametrize("kind", ["pac_lora", "lora"])
def test_exported_tensors_reload_as_the_trained_model(tiny_qwen, tmp_path, kind: str) -> None:
    model = trained_pac(tiny_qwen) if kind == "pac_lora" else trained_lora(tiny_qwen)
    batch = batch_of(load_base_model(tiny_qwen)[1])
    export_adapter(model, trainable(model), tmp_path / "adapter")
    assert adapter_format(tmp_path / "adapter") == kind
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert 0 < len(weights) <= len(trainable(model))  # the adapter alone, never a base weight
    reloaded = load_any_adapter(load_base_model(tiny_qwen)[0], tmp_path / "adapter").eval()
    spans = kind == "pac_lora"
    assert isinstance(reloaded, PACLoraModel) == spans
    assert torch.equal(logits(reloaded, batch, spans), logits(model, batch, spans))



@pytest.mark.parametrize("kind", ["pac_lora", "lora"])
def test_an_adapter_loads_in_the_dtype_of_a_bf16_base(tiny_qwen, tmp_path, kind: str) -> None:
    """peft's default would keep a LoRA adapter in fp32 on a bf16 base (autocast_adapter_dtype=True):
    both kinds compute in the base's dtype, as they were trained."""
    model = trained_pac(tiny_qwen) if kind == "pac_lora" else trained_lora(tiny_qwen)
    export_adapter(model, trainable(model), tmp_path / "adapter")  # fp32 tensors, as training exports them
    reloaded = load_any_adapter(load_base_model(tiny_qwen, dtype=torch.bfloat16)[0], tmp_path / "adapter")
    own = [param for name, param in reloaded.named_parameters() if "lora_" in name or name.endswith("analyze")]
    assert own and {param.dtype for param in own} == {torch.bfloat16}

def test_the_probe_check_passes_for_the_trained_adapter_and_fails_for_another(tiny_qwen, tmp_path) -> None:
    model = trained_pac(tiny_qwen)
    batch = batch_of(load_base_model(tiny_qwen)[1])
    adapter = export_adapter(model, trainable(model), tmp_path / "adapter")
    Probe.of(batch, logits(model, batch)).save(adapter)
    assert (adapter / PROBE_FILE).is_file()
    assert verify_adapter(tiny_qwen, adapter) < 1e-5
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({name: tensor * 0.5 for name, tensor in weights.items()}, str(adapter / "adapter_model.safetensors"))
    assert verify_adapter(tiny_qwen, adapter) > 1e-3


def test_a_base_model_is_a_local_directory_with_its_config(tiny_qwen, tmp_path) -> None:
    assert model_dir(str(tiny_qwen)) == tiny_qwen
    with pytest.raises(FileNotFoundError, match=r"is not a local Hugging Face model directory \(no config.json\)"):
        model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen2.5-7B-Instruct is not a local"):
        load_base_model("Qwen/Qwen2.5-7B-Instruct")


def test_the_config_and_the_public_names_load_without_torch() -> None:
    code = (
        "import sys, pac_lora, pac_lora.config\n"
        "assert sorted(pac_lora.__all__) == pac_lora.__all__\n"
        "pac_lora.PACLoraConfig(r=4), pac_lora.model_dir\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
