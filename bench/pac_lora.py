"""PAC-LoRA step time and peak memory against plain peft LoRA and the research formulation (CPU, fp32).

Every variant wraps the same seeded Qwen2-shaped model (hidden 512, intermediate 1408, 4 layers,
batch 4 x 512 tokens). Step time: the median forward+backward step, the variants stepped
round-robin in one process after a warm-up. Peak memory: in a fresh process per variant, how far
one step raises the peak RSS (Linux VmHWM) above the built model; "saved" is the bytes autograd
keeps for the backward pass.

The research formulation is re-implemented here as the reference: masked copies of the input for
the routers and every expert's output stacked at full width ([b, s, n, d_out]) before the gated sum.

Spans as `build_prompt` gives them: sequence routing's user span covers the user part alone; token
routing's starts at 0 (everything before the news part), as the research code's does.

Targets: seq_vs_lora_step <= 1.3; token_vs_research_step <= 1.0; token_vs_research_peak_mem <= 0.6.
Last line: one JSON object of the figures, ratios first, then `total_s` (wall seconds of the bench).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pac_lora import PACLoraConfig, adapter_parameter_counts, apply_pac_lora  # noqa: E402

VARIANTS = ("lora", "pac_sequence", "pac_token", "research", "pac_sequence_layer")
SHAPE = {"hidden": 512, "intermediate": 1408, "layers": 4, "heads": 8, "vocab": 4096}
BATCH, SEQ = 4, 512
USER, NEWS, RESPONSE = (16, 200), (200, 400), 112  # token spans of a typical prompt; loss on the tail
TOKEN_USER = (0, NEWS[0])  # token routing (and the research code): the user span starts at 0
QWEN25_7B = {
    "hidden": 3584,
    "layers": 28,
    "linears": {
        "q_proj": (3584, 3584), "k_proj": (3584, 512), "v_proj": (3584, 512), "o_proj": (3584, 3584),
        "gate_proj": (3584, 18944), "up_proj": (3584, 18944), "down_proj": (18944, 3584),
    },
}


class ResearchLinear(nn.Module):
    """The research forward: x_news / x_user zeroed outside their span, per-token routers on them,
    three A and three B experts as separate linears, outputs stacked then gate-weighted."""

    spans: tuple[torch.Tensor, torch.Tensor] | None = None  # (user_end, news_end) per row, set per batch

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.1, experts: int = 3) -> None:
        super().__init__()
        self.base_layer = base
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.ModuleList(nn.Linear(base.in_features, r, bias=False) for _ in range(experts))
        self.lora_B = nn.ModuleList(nn.Linear(r, base.out_features, bias=False) for _ in range(experts))
        for b in self.lora_B:
            nn.init.normal_(b.weight, std=0.02)
        self.gate_a = self._router(base.in_features, experts)
        self.gate_b = self._router(base.in_features, experts)

    @staticmethod
    def _router(d_in: int, experts: int) -> nn.Module:
        return nn.Sequential(nn.Linear(d_in, 32, bias=False), nn.GELU(), nn.Linear(32, experts, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        x = self.dropout(x)
        user_end, news_end = ResearchLinear.spans
        positions = torch.arange(x.shape[1])[None, :]
        not_user = ~(positions < user_end[:, None])
        not_news = ~((positions >= user_end[:, None]) & (positions < news_end[:, None]))
        x_news = x.masked_fill(not_news.unsqueeze(-1), 0)
        x_user = x.masked_fill(not_user.unsqueeze(-1), 0)
        gate_a = F.softmax(self.gate_a(x_news), dim=-1)
        gate_b = F.softmax(self.gate_b(x_user), dim=-1)
        a = torch.stack([m.weight for m in self.lora_A]).transpose(1, 2)  # n d r
        b = torch.stack([m.weight for m in self.lora_B]).transpose(1, 2)  # n r k
        mixed = (torch.einsum("bsd,ndr->bsnr", x, a) * gate_a.unsqueeze(-1)).sum(2)
        out = (torch.einsum("bsr,nrk->bsnk", mixed, b) * gate_b.unsqueeze(-1)).sum(2)
        return result + out * self.scaling


def build_model(variant: str) -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=SHAPE["vocab"], hidden_size=SHAPE["hidden"], intermediate_size=SHAPE["intermediate"],
        num_hidden_layers=SHAPE["layers"], num_attention_heads=SHAPE["heads"], num_key_value_heads=SHAPE["heads"],
        max_position_embeddings=SEQ, tie_word_embeddings=True,
    )
    base = Qwen2ForCausalLM(config)
    targets = PACLoraConfig().target_modules
    if variant == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=list(targets)))
    elif variant == "research":
        base.requires_grad_(False)
        for name, module in list(base.named_modules()):
            if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets:
                parent, _, child = name.rpartition(".")
                setattr(base.get_submodule(parent), child, ResearchLinear(module))
        model = base
    else:
        routing = "token" if variant == "pac_token" else "sequence"
        scope = "layer" if variant.endswith("_layer") else "module"
        model = apply_pac_lora(base, PACLoraConfig(routing=routing, router_scope=scope))
        with torch.no_grad():  # non-zero B so the backward does the full work
            for name, param in model.adapter_state_dict().items():
                if name.endswith(".compose"):
                    param.normal_(std=0.02)
    return model.train()


def make_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, SHAPE["vocab"], (BATCH, SEQ), generator=generator)
    labels = torch.full_like(input_ids, -100)
    labels[:, -RESPONSE:] = input_ids[:, -RESPONSE:]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "user_spans": torch.tensor([USER] * BATCH),
        "news_spans": torch.tensor([NEWS] * BATCH),
    }


def step(model: nn.Module, variant: str, batch: dict[str, torch.Tensor]) -> None:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    if variant.startswith("pac"):
        user_spans = torch.tensor([TOKEN_USER] * BATCH) if variant == "pac_token" else batch["user_spans"]
        inputs.update(user_spans=user_spans, news_spans=batch["news_spans"])
    if variant == "research":
        ResearchLinear.spans = (batch["news_spans"][:, 0], batch["news_spans"][:, 1])
    model(**inputs).loss.backward()
    model.zero_grad(set_to_none=True)


def saved_bytes(model: nn.Module, variant: str, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of distinct tensors autograd saves for the backward pass of one step."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(model, variant, batch)
    return sum(seen.values())


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(variant: str) -> dict[str, float]:
    """In a fresh process: how far one training step raises the peak RSS above the built model."""
    model = build_model(variant)
    batch = make_batch()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    step(model, variant, batch)
    peak = rss_kib("VmHWM") - before
    return {"peak_mib": peak / 1024, "saved_mib": saved_bytes(model, variant, batch) / 2**20}


def measure_time(rounds: int) -> dict[str, float]:
    """All variants in one process, stepped round-robin so machine-load drift hits them alike."""
    models = {variant: build_model(variant) for variant in VARIANTS}
    batch = make_batch()
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for variant, model in models.items():
        step(model, variant, batch)  # warm-up
    for _ in range(rounds):
        for variant, model in models.items():
            start = time.perf_counter()
            step(model, variant, batch)
            times[variant].append(time.perf_counter() - start)
    return {variant: statistics.median(values) for variant, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--memory-of", choices=VARIANTS, help="(internal) measure one variant's memory, print JSON")
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of)))
        return
    began = time.perf_counter()
    figures: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        run = subprocess.run(
            [sys.executable, __file__, "--memory-of", variant], capture_output=True, text=True, check=True
        )
        figures[variant] = json.loads(run.stdout.strip().splitlines()[-1])
    for variant, seconds in measure_time(args.rounds).items():
        figures[variant]["step_s"] = seconds
        f = figures[variant]
        print(
            f"{variant:<20} step {f['step_s']:.3f} s   peak +{f['peak_mib']:.0f} MiB   saved {f['saved_mib']:.0f} MiB",
            file=sys.stderr,
        )
    counts = {
        scope: adapter_parameter_counts(PACLoraConfig(router_scope=scope), QWEN25_7B["linears"], QWEN25_7B["layers"],
                                        QWEN25_7B["hidden"])
        for scope in ("module", "layer")
    }
    for scope, c in counts.items():
        print(f"Qwen2.5-7B, router_scope={scope}: experts {c['experts'] / 1e6:.1f}M, routers {c['routers'] / 1e6:.2f}M",
              file=sys.stderr)
    result = {
        "seq_vs_lora_step": figures["pac_sequence"]["step_s"] / figures["lora"]["step_s"],
        "token_vs_research_step": figures["pac_token"]["step_s"] / figures["research"]["step_s"],
        "token_vs_research_peak_mem": figures["pac_token"]["peak_mib"] / figures["research"]["peak_mib"],
        "token_vs_research_saved_mem": figures["pac_token"]["saved_mib"] / figures["research"]["saved_mib"],
        "seq_layer_vs_lora_step": figures["pac_sequence_layer"]["step_s"] / figures["lora"]["step_s"],
        "total_s": time.perf_counter() - began,
        **{f"{variant}_step_s": f["step_s"] for variant, f in figures.items()},
        **{f"{variant}_peak_mib": f["peak_mib"] for variant, f in figures.items()},
        "qwen7b_module_router_params": counts["module"]["routers"],
        "qwen7b_module_expert_params": counts["module"]["experts"],
        "qwen7b_layer_router_params": counts["layer"]["routers"],
        "qwen7b_layer_expert_params": counts["layer"]["experts"],
        "shape": f"hidden {SHAPE['hidden']}, intermediate {SHAPE['intermediate']}, {SHAPE['layers']} layers, "
                 f"batch {BATCH} x {SEQ}, fp32, {torch.get_num_threads()} threads",
    }
    print(json.dumps({k: round(v, 4) if isinstance(v, float) and not math.isnan(v) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
