"""Injecting PAC-LoRA into any Hugging Face decoder-only causal LM.

`apply_pac_lora` replaces every target `nn.Linear` with a `PACLoraLinear` in place (no forked
model files) and returns a `PACLoraModel` whose `forward` and `generate` take per-row
`user_spans` and `news_spans`.

Activation checkpointing (`PACLoraModel.activation_checkpointing_enable`, alias
`gradient_checkpointing_enable`): the backward pass recomputes each decoder layer after `forward`
has left its routing block, so the routing state of each checkpointed call is captured when that
call runs and put back, for the recomputation only, by torch's non-reentrant `context_fn`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pac_lora.config import PACLoraConfig
from pac_lora.gates import GateRecord
from pac_lora.layer import PACLoraLinear
from pac_lora.routing import RouterPair, RoutingState, cache_length, validate_spans

log = logging.getLogger(__name__)


class PACLoraModel(nn.Module):
    """The base model with PAC-LoRA in its linears. Attribute lookups fall through to the base model."""

    def __init__(self, base_model: nn.Module, config: PACLoraConfig, state: RoutingState) -> None:
        super().__init__()
        self.base_model = base_model
        self.pac_config = config
        object.__setattr__(self, "_state", state)
        base_model.register_forward_pre_hook(self._before_base_forward, with_kwargs=True)
        base_model.register_forward_hook(self._after_base_forward, with_kwargs=True)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model, name)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        user_spans: torch.Tensor | None = None,
        news_spans: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        reference = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        # A cached decoding step may repeat the prompt's spans: they index the whole sequence so far.
        past = cache_length(_given_cache(kwargs))
        with self.routing(user_spans, news_spans, reference, past=past):
            return self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        user_spans: torch.Tensor | None = None,
        news_spans: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        with self.routing(user_spans, news_spans, input_ids):
            return self.base_model.generate(input_ids=input_ids, **kwargs)

    @contextmanager
    def routing(
        self,
        user_spans: torch.Tensor | None,
        news_spans: torch.Tensor | None,
        reference: torch.Tensor | None,
        past: int = 0,
    ) -> Iterator[None]:
        """Spans for the calls made inside the block (e.g. a custom generation loop); `past` tokens
        precede `reference` in a KV cache."""
        batch, seq_len = (reference.shape[0], past + reference.shape[1]) if reference is not None else (0, 0)
        device = reference.device if reference is not None else None
        user = validate_spans("user_spans", user_spans, batch, seq_len)
        news = validate_spans("news_spans", news_spans, batch, seq_len)
        state: RoutingState = self._state
        previous = (state.user_spans, state.news_spans)
        state.set_spans(user.to(device) if user is not None else None, news.to(device) if news is not None else None)
        try:
            yield
        finally:
            state.set_spans(*previous)

    @contextmanager
    def record_gates(self) -> Iterator[GateRecord]:
        """Record the expert gates of the prefills run inside the block (a `generate`, a forward):

            with model.record_gates() as record:
                model.generate(...)
            record.rows("module")   # per row: {"q_proj": {"analyze": [...], "compose": [...]}, ...}

        Outside such a block nothing is recorded and routing costs nothing more (pac_lora.gates)."""
        state: RoutingState = self._state
        record = GateRecord(linear_routers(self.base_model))
        previous, state.gate_record = state.gate_record, record
        try:
            yield record
        finally:
            state.gate_record = previous

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model alone inside the block (the zero-shot baseline)."""
        state: RoutingState = self._state
        state.enabled = False
        try:
            yield
        finally:
            state.enabled = True

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """The base model's activation checkpointing (non-reentrant) of every decoder layer, with the
        routing state of each checkpointed call restored while the backward pass recomputes it.

        The state (spans, adapter on or off, the layer routers' gates) is captured when the
        checkpointed layer runs forward, so nothing needs setting per step and micro-batches with
        different spans, their backward passes in any order, are each recomputed with their own.
        `activation_checkpointing_kwargs` go to `torch.utils.checkpoint.checkpoint` (a `context_fn`
        of yours runs inside ours; `use_reentrant=True` is refused: reentrant checkpointing takes
        no `context_fn`); other keywords (transformers 5: `every_n_layers`, `offload`) to the base
        model's method. Sets `config.use_cache = False`, as transformers' Trainer would."""
        options = dict(activation_checkpointing_kwargs or {})
        if options.get("use_reentrant", False):
            raise ValueError(
                "PAC-LoRA needs non-reentrant activation checkpointing (use_reentrant=False): the reentrant "
                "kind cannot restore the routing spans when the backward pass recomputes a layer"
            )
        options["use_reentrant"] = False
        options["context_fn"] = RoutingAtForward(self._state, self._layer_routers(), options.get("context_fn"))
        base = self.base_model
        if hasattr(base, "activation_checkpointing_enable"):  # transformers 5 (the other name is deprecated)
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=options, **kwargs)
        elif hasattr(base, "gradient_checkpointing_enable"):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options, **kwargs)
        else:
            raise ValueError(f"{type(base).__name__} has no activation checkpointing (not a transformers model?)")
        if getattr(base, "config", None) is not None:
            base.config.use_cache = False

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        """transformers 4's name for `activation_checkpointing_enable` (the same, without its warning)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def _layer_routers(self) -> list[RouterPair]:
        """The router pairs of router_scope="layer", whose latest gates their layer's linears read."""
        found: dict[int, RouterPair] = {}
        for module in self.base_model.modules():
            if isinstance(module, PACLoraLinear) and module._layer_router is not None:
                found.setdefault(id(module._layer_router), module._layer_router)
        return list(found.values())

    def _before_base_forward(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._state.begin_step(_given_cache(kwargs))

    def _after_base_forward(self, _module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._state.end_step(_returned_cache(output))

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Experts and routers only, named relative to the base model."""
        return dict(_adapter_parameters(self.base_model))


_RECOMPUTE_CALLS = itertools.count(-1, -1)  # call numbers of recomputations: never a forward's (1, 2, ...)


class RoutingAtForward:
    """A `context_fn` for torch's non-reentrant checkpoint, which calls it when the checkpointed
    layer runs forward: it captures the routing state active then and returns a recompute context
    that restores it while the backward pass recomputes that layer (`RoutingReplay`)."""

    def __init__(
        self, state: RoutingState, layer_routers: list[RouterPair], inner: Callable[[], tuple[Any, Any]] | None = None
    ) -> None:
        self.state, self.layer_routers, self.inner = state, layer_routers, inner

    def __call__(self) -> tuple[Any, Any]:
        replay = RoutingReplay(self.state, self.layer_routers)
        if self.inner is None:
            return nullcontext(), replay
        forward, recompute = self.inner()
        return forward, _Both(replay, recompute)


class RoutingReplay:
    """The routing state of one checkpointed forward call, put back during its recomputation and
    taken away after it (whatever was there before comes back). Reusable: a backward pass with
    retain_graph=True recomputes again."""

    def __init__(self, state: RoutingState, layer_routers: list[RouterPair]) -> None:
        self.state = state
        # References only (no copies): the spans were checked when the forward call took them.
        self.user_spans, self.news_spans = state.user_spans, state.news_spans
        self.enabled, self.decoding = state.enabled, state.decoding
        # Under router_scope="layer" a layer's pre-hook computes its gates before the checkpointed
        # forward (transformers 5 checkpoints `forward`, outside the hooks), and its linears read
        # them back from the pair: the recomputation must see this call's gates, not a later one's.
        self.gates = [(pair, pair.current) for pair in layer_routers]
        self._saved: list[tuple[Any, ...]] = []

    def __enter__(self) -> RoutingReplay:
        state = self.state
        self._saved.append((
            state.user_spans, state.news_spans, state.enabled, state.decoding, state.gate_cache,
            state.gate_record, state._masks, state._call, [(pair, pair.current) for pair, _ in self.gates],
        ))
        state.user_spans, state.news_spans = self.user_spans, self.news_spans
        state.enabled, state.decoding = self.enabled, self.decoding
        # A recomputation adds nothing to a generation's gate cache or to a gate record, and shares
        # no span mask or pooled mean with any forward call (fresh masks, a call number of its own).
        state.gate_cache, state.gate_record = None, None
        state._masks, state._call = {}, next(_RECOMPUTE_CALLS)
        for pair, gates in self.gates:
            pair.current = gates
        return self

    def __exit__(self, *exc: object) -> None:
        state = self.state
        (state.user_spans, state.news_spans, state.enabled, state.decoding, state.gate_cache,
         state.gate_record, state._masks, state._call, currents) = self._saved.pop()
        for pair, gates in currents:
            pair.current = gates


class _Both:
    """Two context managers entered as one (reusable, unlike contextlib's generator-based ones)."""

    def __init__(self, outer: Any, inner: Any) -> None:
        self.outer, self.inner = outer, inner
        self._stacks: list[ExitStack] = []

    def __enter__(self) -> None:
        stack = ExitStack()
        stack.enter_context(self.outer)
        stack.enter_context(self.inner)
        self._stacks.append(stack)

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._stacks.pop().__exit__(*exc))


@dataclass(frozen=True)
class ParameterSummary:
    experts: int
    routers: int
    total: int

    @property
    def trainable(self) -> int:
        return self.experts + self.routers

    def __str__(self) -> str:
        share = 100.0 * self.trainable / max(self.total, 1)
        return (
            f"trainable params: {self.trainable:,} (experts {self.experts:,}, routers {self.routers:,}) "
            f"|| all params: {self.total:,} || trainable%: {share:.4f}"
        )


def apply_pac_lora(base_model: nn.Module, config: PACLoraConfig | None = None) -> PACLoraModel:
    """Wrap the target linears of `base_model` in place; base weights frozen, experts and routers trainable."""
    config = config if config is not None else PACLoraConfig()
    if any(isinstance(module, PACLoraLinear) for module in base_model.modules()):
        raise ValueError("this model already carries PAC-LoRA; load a fresh base model")
    targets = _target_linears(base_model, config)
    state = RoutingState(config)
    layer_routers = _attach_layer_routers(base_model, config, state, targets) if config.router_scope == "layer" else {}
    base_model.requires_grad_(False)
    for name, linear in targets.items():
        # Under router_scope="layer" a target outside the decoder layers (lm_head, say) has no
        # layer input to share, so it keeps a router pair of its own, as under "module".
        wrapped = PACLoraLinear(linear, config, state, key=name, layer_router=_owner(name, layer_routers))
        wrapped.to(device=linear.weight.device, dtype=linear.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(base_model.get_submodule(parent_name), child, wrapped)
    for _name, param in _adapter_parameters(base_model):
        param.requires_grad_(True)
    model = PACLoraModel(base_model, config, state)
    log.info("PAC-LoRA on %d linears: %s", len(targets), parameter_summary(model))
    return model


def parameter_summary(model: PACLoraModel) -> ParameterSummary:
    routers = {id(param) for pair in _router_pairs(model.base_model) for param in pair.parameters(recurse=False)}
    adapter = [param for _name, param in _adapter_parameters(model.base_model)]
    return ParameterSummary(
        experts=sum(p.numel() for p in adapter if id(p) not in routers),
        routers=sum(p.numel() for p in adapter if id(p) in routers),
        total=sum(p.numel() for p in model.base_model.parameters()),
    )


def load_adapter_weights(model: PACLoraModel, tensors: dict[str, torch.Tensor], source: str = "adapter") -> None:
    """Copy `tensors` into the model's experts and routers; every name and shape must match."""
    own = model.adapter_state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source}: adapter does not fit this model: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    with torch.no_grad():
        for name, param in own.items():
            if tensors[name].shape != param.shape:
                given, own_shape = tuple(tensors[name].shape), tuple(param.shape)
                raise ValueError(f"{source}: {name} has shape {given}, model has {own_shape}")
            param.copy_(tensors[name].to(dtype=param.dtype, device=param.device))


def adapter_parameter_counts(
    config: PACLoraConfig, linear_shapes: dict[str, tuple[int, int]], num_layers: int, hidden_size: int
) -> dict[str, int]:
    """Expert and router parameters for a model whose every layer has `linear_shapes` (name -> d_in, d_out)."""
    shapes = {name: shape for name, shape in linear_shapes.items() if name in config.target_modules}
    experts_per_layer = sum(
        config.r * (config.num_analyze_experts * d_in + config.num_compose_experts * d_out)
        for d_in, d_out in shapes.values()
    )

    def router_pair(d_in: int) -> int:
        analyze = config.router_hidden * (d_in + config.num_analyze_experts) if config.routes_analyze else 0
        compose = config.router_hidden * (d_in + config.num_compose_experts) if config.routes_compose else 0
        return analyze + compose

    if config.router_scope == "module":
        routers_per_layer = sum(router_pair(d_in) for d_in, _ in shapes.values())
    else:
        routers_per_layer = router_pair(hidden_size)
    return {"experts": experts_per_layer * num_layers, "routers": routers_per_layer * num_layers}


def _target_linears(model: nn.Module, config: PACLoraConfig) -> dict[str, nn.Linear]:
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rpartition(".")[2] in config.target_modules
    }
    if not found:
        available = sorted({name.rpartition(".")[2] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no linear named {list(config.target_modules)} in this model; its linears: {available}")
    return found


def _attach_layer_routers(
    model: nn.Module, config: PACLoraConfig, state: RoutingState, targets: dict[str, nn.Linear]
) -> dict[str, RouterPair]:
    """One router pair per decoder layer, run by a pre-hook on the layer input."""
    layers = _decoder_layers(model, targets)
    hidden_size = getattr(getattr(model, "config", None), "hidden_size", None)
    routers: dict[str, RouterPair] = {}
    for prefix, layer in layers.items():
        d_in = hidden_size or next(iter(t.in_features for n, t in targets.items() if n.startswith(prefix + ".")))
        pair = RouterPair(d_in, config, key=prefix)
        ref = next(layer.parameters())
        pair.to(device=ref.device, dtype=ref.dtype)
        layer.pac_lora_router = pair

        def run_router(_module: nn.Module, args: tuple, kwargs: dict, pair: RouterPair = pair) -> None:
            if not state.enabled:
                return
            hidden = args[0] if args else kwargs["hidden_states"]
            pair(hidden.to(_param_dtype(pair, hidden)), state)

        layer.register_forward_pre_hook(run_router, with_kwargs=True)
        routers[prefix] = pair
    return routers


def _param_dtype(pair: RouterPair, hidden: torch.Tensor) -> torch.dtype:
    param = next(pair.parameters(), None)
    return param.dtype if param is not None else hidden.dtype


def _decoder_layers(model: nn.Module, targets: dict[str, nn.Linear]) -> dict[str, nn.Module]:
    """The longest nn.ModuleList whose every element holds target linears (model.layers in HF LMs)."""
    best: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) <= len(best):
            continue
        items = {f"{name}.{index}": child for index, child in enumerate(module)}
        if all(any(t.startswith(prefix + ".") for t in targets) for prefix in items):
            best = items
    if not best:
        raise ValueError("router_scope='layer' needs a list of decoder layers holding the target linears")
    return best


def linear_routers(base_model: nn.Module) -> dict[str, str]:
    """Each wrapped linear's path -> the key of the router pair that gates its experts."""
    found = {}
    for module in base_model.modules():
        if isinstance(module, PACLoraLinear):
            router = module.router if module.router is not None else module._layer_router
            found[module.key] = router.key
    return found


def _owner(name: str, layer_routers: dict[str, RouterPair]) -> RouterPair | None:
    return next((pair for prefix, pair in layer_routers.items() if name.startswith(prefix + ".")), None)


def _given_cache(kwargs: dict[str, Any]) -> Any:
    # transformers 5 renamed `past_key_values` to `cache`; both are accepted.
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def _returned_cache(output: Any) -> Any:
    """The KV cache in a model output (None for a tuple output or use_cache=False)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _adapter_parameters(base_model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Experts and routers in the model's parameter order, found by identity in the PAC-LoRA modules,
    never by name: a base model's own parameter called `...router...` stays frozen and unsaved."""
    own = {id(param) for pair in _router_pairs(base_model) for param in pair.parameters(recurse=False)}
    for module in base_model.modules():
        if isinstance(module, PACLoraLinear):
            own.update((id(module.analyze), id(module.compose)))
    return [(name, param) for name, param in base_model.named_parameters() if id(param) in own]


def _router_pairs(base_model: nn.Module) -> list[RouterPair]:
    return [module for module in base_model.modules() if isinstance(module, RouterPair)]
