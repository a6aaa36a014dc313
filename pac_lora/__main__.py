"""`python -m pac_lora MODEL_DIR`: what PAC-LoRA would add to a local model, without loading its weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pac_lora import PACLoraConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pac_lora",
        description="Count the expert and router parameters PAC-LoRA adds to a local Hugging Face model "
        "(built on the meta device from its config.json: no weights are read).",
    )
    parser.add_argument("model_dir", help="local Hugging Face model directory (holds config.json)")
    defaults = PACLoraConfig()
    parser.add_argument("--experts", type=int, default=defaults.num_analyze_experts, help="analyze = compose experts")
    parser.add_argument("--r", type=int, default=defaults.r)
    parser.add_argument("--router-scope", choices=["module", "layer"], default=defaults.router_scope)
    parser.add_argument("--gate-mode", choices=["both", "avg_a", "avg_b", "avg_both"], default=defaults.gate_mode)
    args = parser.parse_args(argv)
    try:
        config = PACLoraConfig(
            num_analyze_experts=args.experts, num_compose_experts=args.experts, r=args.r,
            router_scope=args.router_scope, gate_mode=args.gate_mode,
        )
        counts, base, layers = count_for(Path(args.model_dir), config)
    except (OSError, ValueError) as error:
        print(f"python -m pac_lora: {error}", file=sys.stderr)
        return 2
    trainable = counts["experts"] + counts["routers"]
    print(f"{args.model_dir}: {layers} layers, base {base:,} parameters")
    print(f"PAC-LoRA r={config.r}, {config.num_analyze_experts}+{config.num_compose_experts} experts, "
          f"router_scope={config.router_scope}, gate_mode={config.gate_mode}")
    print(f"  experts {counts['experts']:,}  routers {counts['routers']:,}  "
          f"trainable {trainable:,} ({100 * trainable / base:.3f}% of the base)")
    return 0


def count_for(directory: Path, config: PACLoraConfig) -> tuple[dict[str, int], int, int]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from pac_lora import adapter_parameter_counts, model_dir

    model_config = AutoConfig.from_pretrained(model_dir(directory), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    first_layer = model.model.layers[0]
    shapes = {
        name.rpartition(".")[2]: (module.in_features, module.out_features)
        for name, module in first_layer.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    if not set(config.target_modules) & set(shapes):
        raise ValueError(f"no linear named {list(config.target_modules)} in this model; its linears: {sorted(shapes)}")
    layers = model_config.num_hidden_layers
    counts = adapter_parameter_counts(config, shapes, layers, model_config.hidden_size)
    return counts, sum(p.numel() for p in model.parameters()), layers


if __name__ == "__main__":
    sys.exit(main())
