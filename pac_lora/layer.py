"""PACLoraLinear: a frozen linear plus a router-mixed set of low-rank experts.

The mixture is never materialised per expert at full width: token routing mixes in rank space
([b, s, experts * r]) and sequence routing builds one effective A and B per sequence, so its
cost is that of a plain LoRA plus a few tiny matmuls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pac_lora.config import PACLoraConfig
from pac_lora.routing import RouterPair, RoutingState


class PACLoraLinear(nn.Module):
    def __init__(
        self,
        base_layer: nn.Linear,
        config: PACLoraConfig,
        state: RoutingState,
        key: str,
        layer_router: RouterPair | None = None,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.config = config
        self.key = key
        d_in, d_out = base_layer.in_features, base_layer.out_features
        self.analyze = nn.Parameter(torch.empty(config.num_analyze_experts, config.r, d_in))
        self.compose = nn.Parameter(torch.zeros(config.num_compose_experts, d_out, config.r))
        for expert in self.analyze.data:
            nn.init.kaiming_uniform_(expert, a=math.sqrt(5))
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        # Its own router pair under router_scope="module", and under "layer" when no decoder layer
        # owns this linear (lm_head); otherwise the layer's pair, not registered as a submodule
        # here: the decoder layer owns it (and its parameters).
        self.router = RouterPair(d_in, config, key) if layer_router is None else None
        object.__setattr__(self, "_layer_router", layer_router)
        object.__setattr__(self, "_state", state)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        state: RoutingState = self._state
        if not state.enabled:
            return result
        if x.ndim != 3:
            raise ValueError(f"{self.key}: PAC-LoRA expects [batch, seq, features] inputs, got {tuple(x.shape)}")
        x = x.to(self.analyze.dtype)
        if self.config.routing == "sequence":
            # Sequence gates read the input before dropout, so training and generation route alike.
            gate_a, gate_b = self.router(x, state) if self.router is not None else self._layer_router.current
            x = self.dropout(x)
        else:
            x = self.dropout(x)  # the research order: routers see the dropped-out input
            gate_a, gate_b = self.router(x, state) if self.router is not None else self._layer_router.current
        if gate_a.ndim == 2:
            delta = mix_per_sequence(x, self.analyze, self.compose, gate_a, gate_b)
        else:
            delta = mix_per_token(x, self.analyze, self.compose, gate_a, gate_b)
        return result + (delta * self.config.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"analyze={c.num_analyze_experts}x(r={c.r}, in={self.in_features}), "
            f"compose={c.num_compose_experts}x(out={self.out_features}, r={c.r}), "
            f"routing={c.routing}, gate_mode={c.gate_mode}, router_scope={c.router_scope}"
        )


def mix_per_sequence(
    x: torch.Tensor, analyze: torch.Tensor, compose: torch.Tensor, gate_a: torch.Tensor, gate_b: torch.Tensor
) -> torch.Tensor:
    """Gates [b, N] and [b, M] fold the experts into one A [b, r, d_in] and one B [b, d_out, r]."""
    gate_a, gate_b = gate_a.to(x.dtype), gate_b.to(x.dtype)
    a_eff = torch.einsum("bn,nrd->brd", gate_a, analyze)
    b_eff = torch.einsum("bm,mor->bor", gate_b, compose)
    return torch.bmm(torch.bmm(x, a_eff.transpose(1, 2)), b_eff.transpose(1, 2))


def mix_per_token(
    x: torch.Tensor, analyze: torch.Tensor, compose: torch.Tensor, gate_a: torch.Tensor, gate_b: torch.Tensor
) -> torch.Tensor:
    """Gates [b, s, N] and [b, s, M]; every intermediate stays in rank space ([b, s, experts * r])."""
    n_a, rank, d_in = analyze.shape
    n_b, d_out, _ = compose.shape
    batch, seq_len, _ = x.shape
    per_expert = F.linear(x, analyze.reshape(n_a * rank, d_in)).view(batch, seq_len, n_a, rank)
    mixed = torch.einsum("bsn,bsnr->bsr", gate_a.to(x.dtype), per_expert)
    spread = (gate_b.to(x.dtype).unsqueeze(-1) * mixed.unsqueeze(-2)).reshape(batch, seq_len, n_b * rank)
    # B_cat[o, j * r + k] = B_j[o, k], so B_cat @ spread = sum_j gB_j B_j mixed.
    return F.linear(spread, compose.permute(1, 0, 2).reshape(d_out, n_b * rank))
