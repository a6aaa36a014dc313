"""Adapters trained by the research code's forked peft, loaded into a PAC-LoRA model.

The research formulation is PAC-LoRA with token routing and a router pair per wrapped linear;
only its parameter names differ (three separate A and B linears, `lora_{A,B}_gate_dense{1,2}`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from pac_lora.adapters import WEIGHTS_FILE
from pac_lora.model import PACLoraModel, load_adapter_weights

PICKLED_WEIGHTS_FILE = "adapter_model.bin"  # what older peft versions saved
RESEARCH_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.(?P<name>lora_(?:A|B)(?P<index>\d*)|lora_(?:A|B)_gate_dense[12])\.weight$"
)
RESEARCH_ROUTERS = {
    "lora_A_gate_dense1": "analyze_in",
    "lora_A_gate_dense2": "analyze_out",
    "lora_B_gate_dense1": "compose_in",
    "lora_B_gate_dense2": "compose_out",
}


def load_research_adapter(model: PACLoraModel, state_dict_or_path: dict[str, torch.Tensor] | str | Path) -> None:
    """Load weights saved by the research code's forked peft (token routing, one router pair per module).

    Keys look like `base_model.model.<module path>.<name>.weight` with name in lora_A, lora_A1, lora_A2,
    lora_B, lora_B1, lora_B2 and lora_{A,B}_gate_dense{1,2}; `.bin` or `.safetensors`, or a directory
    holding `adapter_model.{safetensors,bin}`.
    """
    config = model.pac_config
    if config.routing != "token" or config.router_scope != "module":
        raise ValueError("research adapters need PACLoraConfig(routing='token', router_scope='module')")
    research = _read_research_weights(state_dict_or_path)
    converted: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for key, tensor in research.items():
        match = RESEARCH_KEY.match(key.replace(".default.", "."))
        if match is None:
            raise ValueError(f"not a research PAC-LoRA key: {key!r}")
        module, name = match["module"], match["name"]
        if name in RESEARCH_ROUTERS:
            converted[f"{module}.router.{RESEARCH_ROUTERS[name]}"] = tensor
        else:
            side = "analyze" if name.startswith("lora_A") else "compose"
            experts.setdefault((module, side), {})[int(match["index"] or 0)] = tensor
    for (module, side), by_index in experts.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"{module}: research experts {sorted(by_index)} are not numbered 0..n-1")
        converted[f"{module}.{side}"] = torch.stack([by_index[i] for i in range(len(by_index))])
    load_adapter_weights(model, converted, source="research adapter")


def _read_research_weights(source: dict[str, torch.Tensor] | str | Path) -> dict[str, torch.Tensor]:
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.is_dir():
        candidates = [path / WEIGHTS_FILE, path / PICKLED_WEIGHTS_FILE]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: no {WEIGHTS_FILE} or {PICKLED_WEIGHTS_FILE}")
        path = found
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
