"""Expert gate weights read out of a prefill, per row: which analyze and compose experts a prompt chose.

Inside `PACLoraModel.record_gates()` every router adds what it computed at prefill (cached decoding
steps are not recorded: the research code's dump skipped them too):

- sequence routing: the router's one gate vector per row, exactly what every token of that row
  used, prompt and generated tokens alike;
- token routing: per token, so the analyze gates are averaged over the news span's tokens and the
  compose gates over the user span's tokens (from 0 to the news part, as the prompt's spans say).
  Outside its span a token-mode router reads zeros and gives exactly uniform gates, so the span's
  mean is what the research dump holds beyond constants. An empty span reports uniform gates.

`GateRecord.rows(detail)` then summarises each row: `"module"` gives one entry per target module
name (q_proj, ..., down_proj), averaged over the layers; `"layer"` one entry per wrapped linear
(its full path, e.g. model.layers.3.mlp.down_proj), the gates that linear's experts were mixed
with. Under router_scope="layer" a decoder layer's linears share its router, so they report the
same gates. Each entry is {"analyze": [N floats], "compose": [M floats]}; both sum to 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, get_args

import torch

from pac_lora.config import GateDetail

if TYPE_CHECKING:
    from pac_lora.routing import RoutingState

GATE_DETAILS: tuple[str, ...] = get_args(GateDetail)


class GateRecord:
    """The gates of one prefill: router key -> (analyze [batch, N], compose [batch, M]), float32 on CPU."""

    def __init__(self, linear_routers: dict[str, str]) -> None:
        self.linear_routers = linear_routers  # wrapped linear's path -> the key of the router it uses
        self.by_router: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, key: str, gates: tuple[torch.Tensor, torch.Tensor], state: RoutingState) -> None:
        gate_a, gate_b = gates
        if gate_a.ndim == 3:  # token routing: [batch, seq, experts], averaged over the router's span
            batch, seq_len, _ = gate_a.shape
            gate_a = span_mean(gate_a, state.mask("news", batch, seq_len, gate_a.dtype))
            gate_b = span_mean(gate_b, state.mask("user", batch, seq_len, gate_b.dtype))
        self.by_router[key] = (gate_a.detach().float().cpu(), gate_b.detach().float().cpu())

    @property
    def batch(self) -> int:
        return next(iter(self.by_router.values()))[0].shape[0] if self.by_router else 0

    def rows(self, detail: GateDetail = "module") -> list[dict[str, dict[str, list[float]]]]:
        """Per row of the batch: {name: {"analyze": [...], "compose": [...]}} (see the module's doc)."""
        if detail not in GATE_DETAILS:
            raise ValueError(f"gate detail: expected one of {GATE_DETAILS}, got {detail!r}")
        if not self.by_router:
            return []
        per_linear = {
            path: self.by_router[key] for path, key in self.linear_routers.items() if key in self.by_router
        }
        if detail == "layer":
            entries = per_linear
        else:
            groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for path, gates in per_linear.items():
                groups.setdefault(path.rpartition(".")[2], []).append(gates)
            entries = {
                name: (torch.stack([a for a, _ in items]).mean(0), torch.stack([b for _, b in items]).mean(0))
                for name, items in groups.items()
            }
        return [
            {name: {"analyze": a[row].tolist(), "compose": b[row].tolist()} for name, (a, b) in entries.items()}
            for row in range(self.batch)
        ]


def span_mean(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq, experts] averaged over each row's span ([batch, seq] 0/1); uniform where a span is empty."""
    counts = mask.sum(dim=-1, keepdim=True)
    means = torch.bmm(mask.unsqueeze(1), gates).squeeze(1) / counts.clamp(min=1)
    uniform = torch.full_like(means, 1.0 / gates.shape[-1])
    return torch.where(counts > 0, means, uniform)

