"""Routers and the per-call routing state: spans, prefill vs cached decoding, gates kept with the cache.

Spans are [start, end) token positions per row of the full (padded) sequence. The state is set
by the model wrapper before each call and refreshed by a forward pre-hook on the base model at
every step of `generate` (or of a hand-written decoding loop), which is how the wrapped linears
learn whether they see a prefill (the spans apply) or a cached decoding step (they do not). A
forward hook after each prefill puts its sequence-mode gates on the KV cache the model returns,
also when the model created that cache itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pac_lora.config import PACLoraConfig

GATE_CACHE_ATTR = "_pac_lora_gates"
POOLED_ATTR = "_pac_lora_pooled"


@dataclass
class RoutingState:
    """What the wrapped linears need to know about the current forward call."""

    config: PACLoraConfig
    enabled: bool = True
    user_spans: torch.Tensor | None = None
    news_spans: torch.Tensor | None = None
    decoding: bool = False
    # Sequence-mode gates of the current call, keyed by router: filled at prefill, read back at
    # cached decoding. It lives on the KV cache object so that it is created and dropped with the
    # generation it belongs to; the state lets go of it when the call ends.
    gate_cache: dict[str, Any] | None = None
    # Set inside PACLoraModel.record_gates(): every router adds its prefill gates (pac_lora.gates).
    gate_record: Any = None
    _masks: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict)
    _call: int = 0

    def set_spans(self, user_spans: torch.Tensor | None, news_spans: torch.Tensor | None) -> None:
        self.user_spans, self.news_spans = user_spans, news_spans
        self._masks.clear()

    def begin_step(self, cache: Any) -> None:
        """Called before every base-model forward with the KV cache it was given (or None)."""
        self.decoding = cache_length(cache) > 0
        self._call += 1
        if self.decoding:
            self.gate_cache = getattr(cache, GATE_CACHE_ATTR, None)
        else:
            self.gate_cache = {}
            if cache is not None:
                setattr(cache, GATE_CACHE_ATTR, self.gate_cache)

    def end_step(self, cache: Any) -> None:
        """Called after every base-model forward with the KV cache it returned (or None).

        Without a cache passed in, transformers models make their own at prefill (a manual decoding
        loop: `out = model(..., use_cache=True)`, then `model(next_ids, past_key_values=out.past_key_values)`),
        so the prefill gates are attached to the returned cache here."""
        if not self.decoding and cache is not None and self.gate_cache is not None:
            setattr(cache, GATE_CACHE_ATTR, self.gate_cache)
        self.gate_cache = None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """[b, 2, d]: masked means of x over the news span and the user span, in one pass.

        Linears that read the same tensor (q/k/v, gate/up) share the result, which is kept on the
        tensor itself for this call, so the mean is computed (and back-propagated) once per input.
        """
        cached = getattr(x, POOLED_ATTR, None)
        if cached is not None and cached[0] == (self._call, id(self.user_spans)):
            return cached[1]
        batch, seq_len, _ = x.shape
        masks = torch.stack(
            [self.mask("news", batch, seq_len, x.dtype), self.mask("user", batch, seq_len, x.dtype)], dim=1
        )
        means = torch.bmm(masks, x) / masks.sum(dim=-1, keepdim=True).clamp(min=1)
        setattr(x, POOLED_ATTR, ((self._call, id(self.user_spans)), means))
        return means

    def mask(self, which: str, batch: int, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
        """[batch, seq_len] 0/1 mask of the user or news span, built once per call and shape."""
        key = (which, batch, seq_len, dtype)
        if key not in self._masks:
            spans = self.user_spans if which == "user" else self.news_spans
            if spans is None:
                raise ValueError(
                    "PAC-LoRA routing needs user_spans and news_spans: call the PAC-LoRA model "
                    "(model(..., user_spans=..., news_spans=...) or model.generate(...)), not the base model"
                )
            if spans.shape[0] != batch:  # generate() repeats each row for num_return_sequences / beams
                if batch % spans.shape[0]:
                    raise ValueError(f"{which}_spans has {spans.shape[0]} rows but the batch has {batch}")
                spans = spans.repeat_interleave(batch // spans.shape[0], dim=0)
            self._masks[key] = span_mask(spans, seq_len, dtype)
        return self._masks[key]


def cache_length(cache: Any) -> int:
    """Tokens already held by a KV cache (0 for none)."""
    return int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0


def validate_spans(name: str, spans: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor | None:
    """A clear error for spans of the wrong shape, order or range."""
    if spans is None:
        return None
    spans = torch.as_tensor(spans)
    if spans.dtype not in (torch.int64, torch.int32) or spans.ndim != 2 or spans.shape[1] != 2:
        got = f"{tuple(spans.shape)} {spans.dtype}"
        raise ValueError(f"{name}: expected an integer tensor of shape [batch, 2], got {got}")
    if spans.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} rows (one per sequence), got {spans.shape[0]}")
    start, end = spans[:, 0], spans[:, 1]
    if bool((start < 0).any()) or bool((end < start).any()) or bool((end > seq_len).any()):
        raise ValueError(
            f"{name}: each row must be [start, end) with 0 <= start <= end <= {seq_len}, got {spans.tolist()}"
        )
    return spans.long()


def span_mask(spans: torch.Tensor, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
    """[batch, seq_len] with 1 inside each row's [start, end), 0 elsewhere."""
    positions = torch.arange(seq_len, device=spans.device)
    inside = (positions >= spans[:, :1]) & (positions < spans[:, 1:])
    return inside.to(dtype)


class RouterPair(nn.Module):
    """The analyze router (news side, gates over the A experts) and the compose router (user side,
    gates over the B experts): softmax(W2 gelu(W1 x)), no bias. A side with a uniform gate
    (gate_mode avg_*) has no router at all. Parameters are held here, not in child modules, so
    that DeepSpeed ZeRO-3 gathers them when this module runs."""

    def __init__(self, d_in: int, config: PACLoraConfig, key: str) -> None:
        super().__init__()
        self.key = key
        self.config = config
        hidden = config.router_hidden
        self.analyze_in = self._weight(hidden, d_in) if config.routes_analyze else None
        self.analyze_out = self._weight(config.num_analyze_experts, hidden) if config.routes_analyze else None
        self.compose_in = self._weight(hidden, d_in) if config.routes_compose else None
        self.compose_out = self._weight(config.num_compose_experts, hidden) if config.routes_compose else None
        self.current: tuple[torch.Tensor, torch.Tensor] | None = None  # gates of the layer scope's last call

    @staticmethod
    def _weight(rows: int, cols: int) -> nn.Parameter:
        weight = torch.empty(rows, cols)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        return nn.Parameter(weight)

    def forward(self, x: torch.Tensor, state: RoutingState) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.routing == "sequence":
            gates = self._sequence_gates(x, state)
        else:
            gates = self._token_gates(x, state)
        self.current = gates
        if state.gate_record is not None and not state.decoding:
            state.gate_record.add(self.key, gates, state)
        return gates

    def _sequence_gates(self, x: torch.Tensor, state: RoutingState) -> tuple[torch.Tensor, torch.Tensor]:
        if state.decoding:
            if state.gate_cache is None or self.key not in state.gate_cache:
                raise RuntimeError(
                    "cached decoding step without prefill gates: start generation with the PAC-LoRA model"
                )
            return state.gate_cache[self.key]
        batch = x.shape[0]
        means = state.pooled(x) if self.analyze_in is not None or self.compose_in is not None else None
        news = means[:, 0] if self.analyze_in is not None else None
        user = means[:, 1] if self.compose_in is not None else None
        gates = (
            self._route(news, self.analyze_in, self.analyze_out, batch, self.config.num_analyze_experts, x),
            self._route(user, self.compose_in, self.compose_out, batch, self.config.num_compose_experts, x),
        )
        if state.gate_cache is not None:
            state.gate_cache[self.key] = gates
        return gates

    def _token_gates(self, x: torch.Tensor, state: RoutingState) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, _ = x.shape
        if state.decoding:
            # The research forward treats every token of a cached decoding step as a user-span token.
            news_mask = x.new_zeros(batch, seq_len)
            user_mask = x.new_ones(batch, seq_len)
        else:
            news_mask = state.mask("news", batch, seq_len, x.dtype)
            user_mask = state.mask("user", batch, seq_len, x.dtype)
        shape = (batch, seq_len)
        return (
            self._route_tokens(x, news_mask, self.analyze_in, self.analyze_out, shape, self.config.num_analyze_experts),
            self._route_tokens(x, user_mask, self.compose_in, self.compose_out, shape, self.config.num_compose_experts),
        )

    @staticmethod
    def _route(
        pooled: torch.Tensor | None, w_in: nn.Parameter | None, w_out: nn.Parameter | None,
        batch: int, experts: int, like: torch.Tensor,
    ) -> torch.Tensor:
        if pooled is None or w_in is None or w_out is None:
            return like.new_full((batch, experts), 1.0 / experts)
        return F.linear(F.gelu(F.linear(pooled, w_in)), w_out).softmax(dim=-1)

    @staticmethod
    def _route_tokens(
        x: torch.Tensor, mask: torch.Tensor, w_in: nn.Parameter | None, w_out: nn.Parameter | None,
        shape: tuple[int, int], experts: int,
    ) -> torch.Tensor:
        if w_in is None or w_out is None:
            return x.new_full((*shape, experts), 1.0 / experts)
        # W1 (x * mask) == (W1 x) * mask for a 0/1 mask: same values as zeroing the input first,
        # without keeping a masked copy of x alive for the backward pass.
        hidden = F.linear(x, w_in) * mask.unsqueeze(-1)
        return F.linear(F.gelu(hidden), w_out).softmax(dim=-1)
