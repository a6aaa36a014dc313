"""PAC-LoRA forward, routing, generation and adapter files on tiny Qwen2 and Llama models (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from pac_lora import (
    PACLoraConfig,
    adapter_parameter_counts,
    apply_pac_lora,
    load_adapter,
    load_base_model,
    load_research_adapter,
    parameter_summary,
    save_adapter,
)
from pac_lora.layer import PACLoraLinear
from pac_lora.routing import RouterPair

from .conftest import batch_of, randomize_adapter

ROUTINGS = ["sequence", "token"]
SCOPES = ["module", "layer"]


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def pac(base, **kwargs):
    return apply_pac_lora(base, PACLoraConfig(dropout=0.0, **kwargs)).eval()


@pytest.mark.parametrize("routing", ROUTINGS)
def test_one_expert_each_equals_peft_lora(tiny_qwen, routing: str) -> None:
    ours = pac(load_base_model(tiny_qwen)[0], num_analyze_experts=1, num_compose_experts=1, routing=routing)
    base, tokenizer = load_base_model(tiny_qwen)
    targets = list(PACLoraConfig().target_modules)
    reference = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets)).eval()
    generator = torch.Generator().manual_seed(1)
    wrapped = {name: m for name, m in ours.base_model.named_modules() if isinstance(m, PACLoraLinear)}
    with torch.no_grad():
        for name, layer in wrapped.items():
            peft_layer = reference.base_model.model.get_submodule(name)
            a = torch.randn(peft_layer.lora_A["default"].weight.shape, generator=generator) * 0.1
            b = torch.randn(peft_layer.lora_B["default"].weight.shape, generator=generator) * 0.1
            peft_layer.lora_A["default"].weight.copy_(a)
            peft_layer.lora_B["default"].weight.copy_(b)
            layer.analyze.copy_(a.unsqueeze(0))
            layer.compose.copy_(b.unsqueeze(0))
    batch = batch_of(tokenizer, routing)
    with torch.no_grad():
        expected = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert len(wrapped) == 14  # 7 projections x 2 layers
    torch.testing.assert_close(logits(ours, batch), expected, atol=1e-5, rtol=0)
    with reference.disable_adapter(), torch.no_grad():
        plain = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(plain, expected, atol=1e-3)  # the adapter really changes the output


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_zero_compose_experts_leave_the_base_model_unchanged(tiny_qwen, routing: str, scope: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    batch = batch_of(tokenizer, routing)
    with torch.no_grad():
        expected = base.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model = pac(base, routing=routing, router_scope=scope)
    assert torch.equal(logits(model, batch), expected)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_gates_sum_to_one_and_token_gates_are_uniform_outside_their_span(tiny_qwen, routing, scope) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, routing=routing, router_scope=scope)
    randomize_adapter(model, scale=0.5)
    batch = batch_of(tokenizer, routing, padding_side="left")
    logits(model, batch)
    routers = [m for m in model.modules() if isinstance(m, RouterPair)]
    assert len(routers) == (14 if scope == "module" else 2)
    seq_len = batch["input_ids"].shape[1]
    positions = torch.arange(seq_len)
    for router in routers:
        for gates, spans in zip(router.current, (batch["news_spans"], batch["user_spans"]), strict=True):
            torch.testing.assert_close(gates.sum(-1), torch.ones(gates.shape[:-1]), atol=1e-6, rtol=0)
            if routing == "sequence":
                assert gates.shape == (3, 3)
                assert not torch.allclose(gates, torch.full_like(gates, 1 / 3))
                continue
            outside = (positions < spans[:, :1]) | (positions >= spans[:, 1:])
            assert torch.equal(gates[outside], torch.full_like(gates[outside], 1 / 3))
            assert not torch.allclose(gates[~outside], torch.full_like(gates[~outside], 1 / 3))


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_gradients_reach_experts_and_routers_not_the_base(tiny_qwen, routing: str, scope: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = apply_pac_lora(base, PACLoraConfig(router_scope=scope, routing=routing))
    randomize_adapter(model)
    model.train()
    model(**batch_of(tokenizer, routing)).loss.backward()
    adapter = model.adapter_state_dict()
    assert adapter and all(p.requires_grad for p in adapter.values())
    last = f"model.layers.{model.config.num_hidden_layers - 1}."
    for name, param in adapter.items():
        assert param.grad is not None, name
        # Token routing reads each span's own positions, and in the last layer only k and v carry a
        # span position into the response (the tokens with loss): the other routers there get no
        # gradient at all, as in the research code.
        unreachable = routing == "token" and name.startswith(last) and ".router." in name and not (
            ".k_proj." in name or ".v_proj." in name
        )
        assert (param.grad.abs().sum() == 0) if unreachable else (param.grad.abs().sum() > 0), name
    frozen = [(n, p) for n, p in model.base_model.named_parameters() if n not in adapter]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_padded_batch_equals_row_by_row(tiny_qwen, routing: str, scope: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, routing=routing, router_scope=scope)
    randomize_adapter(model, scale=0.1)  # moves logits by ~0.6: the adapter matters, float noise stays ~1e-7
    for side in ("left", "right"):
        batch = batch_of(tokenizer, routing, padding_side=side)
        together = logits(model, batch)
        for row in range(batch["input_ids"].shape[0]):
            real = batch["attention_mask"][row].bool()
            shift = int((~real).sum()) if side == "left" else 0
            single = {
                "input_ids": batch["input_ids"][row : row + 1, real],
                "attention_mask": batch["attention_mask"][row : row + 1, real],
                "user_spans": batch["user_spans"][row : row + 1] - shift,
                "news_spans": batch["news_spans"][row : row + 1] - shift,
            }
            torch.testing.assert_close(together[row, real], logits(model, single)[0], atol=1e-5, rtol=0)
            single["news_spans"], single["user_spans"] = single["user_spans"], single["news_spans"]
            assert (together[row, real] - logits(model, single)[0]).abs().max() > 1e-3  # spans matter


def generate(model, batch, use_cache: bool, **overrides) -> torch.Tensor:
    options = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "use_cache": use_cache, **overrides}
    return model.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        user_spans=batch["user_spans"],
        news_spans=batch["news_spans"],
        **options,
    )


@pytest.mark.parametrize("scope", SCOPES)
def test_greedy_generation_with_cache_equals_without(tiny_qwen, scope: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, router_scope=scope)
    randomize_adapter(model, scale=0.5)
    batch = batch_of(tokenizer, with_response=False, padding_side="left")
    cached = generate(model, batch, use_cache=True)
    uncached = generate(model, batch, use_cache=False)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 8
    assert torch.equal(cached, uncached)
    with model.disable_adapter():
        plain = model.base_model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            max_new_tokens=8, min_new_tokens=8, do_sample=False,
        )
    assert not torch.equal(cached, plain)  # the adapter steers generation


def greedy_loop(model, batch, steps: int, use_cache: bool) -> torch.Tensor:
    """A hand-written greedy decoding loop through the PAC-LoRA model, the same arguments every step."""
    ids, mask, cache = batch["input_ids"], batch["attention_mask"], None
    spans = {"user_spans": batch["user_spans"], "news_spans": batch["news_spans"]}
    with torch.no_grad():
        for _ in range(steps):
            step_ids = ids[:, -1:] if cache is not None else ids
            out = model(input_ids=step_ids, attention_mask=mask, past_key_values=cache, use_cache=use_cache, **spans)
            cache = out.past_key_values if use_cache else None
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            ids, mask = torch.cat([ids, token], dim=1), torch.cat([mask, torch.ones_like(token)], dim=1)
    return ids


@pytest.mark.parametrize("scope", SCOPES)
def test_manual_decoding_loop_with_the_model_made_cache_equals_generate(tiny_qwen, scope: str) -> None:
    """No cache passed at prefill: the model makes its own, and the prefill gates must travel with it."""
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, router_scope=scope)
    randomize_adapter(model, scale=0.5)
    batch = batch_of(tokenizer, with_response=False, padding_side="left")
    uncached = greedy_loop(model, batch, steps=8, use_cache=False)
    # A decoding step without spans: the gates come from the cache the prefill returned.
    with torch.no_grad():
        prefill = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=True,
                        user_spans=batch["user_spans"], news_spans=batch["news_spans"])
        token = prefill.logits[:, -1].argmax(-1, keepdim=True)
        step = model(input_ids=token, attention_mask=torch.cat([batch["attention_mask"], torch.ones_like(token)], 1),
                     past_key_values=prefill.past_key_values, use_cache=True)
    assert torch.equal(step.logits[:, -1].argmax(-1), uncached[:, batch["input_ids"].shape[1] + 1])
    # Or with the prompt's spans repeated at every step, as in the loop without a cache.
    cached = greedy_loop(model, batch, steps=8, use_cache=True)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, generate(model, batch, use_cache=True))


def test_sampling_several_returns_per_prompt_expands_the_spans(tiny_qwen) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base)
    batch = batch_of(tokenizer, with_response=False, padding_side="left")
    torch.manual_seed(0)
    out = generate(model, batch, use_cache=True, num_return_sequences=2, do_sample=True, top_k=20, temperature=0.7)
    prompts = batch["input_ids"].repeat_interleave(2, dim=0)
    assert out.shape[0] == 2 * batch["input_ids"].shape[0]
    assert torch.equal(out[:, : prompts.shape[1]], prompts)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_save_then_load_reproduces_logits_exactly(tiny_qwen, tmp_path, routing: str, scope: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, router_scope=scope, routing=routing)
    randomize_adapter(model, scale=0.3)
    batch = batch_of(tokenizer, routing, padding_side="left")
    save_adapter(model, tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter_model.safetensors", "pac_lora_config.json"]
    weights_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    adapter_bytes = sum(p.numel() * 4 for p in model.adapter_state_dict().values())
    assert weights_bytes < adapter_bytes + 64 * 1024  # adapter only, no base weights
    reloaded = load_adapter(load_base_model(tiny_qwen)[0], tmp_path / "adapter").eval()
    assert reloaded.pac_config == model.pac_config
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_adapter_for_another_shape_is_refused(tiny_qwen, tiny_llama, tmp_path) -> None:
    model = pac(load_base_model(tiny_qwen)[0], router_scope="layer")
    save_adapter(model, tmp_path / "adapter")
    PACLoraConfig(router_scope="module", dropout=0.0).save(tmp_path / "adapter")  # config no longer matches
    with pytest.raises(ValueError, match="adapter does not fit this model"):
        load_adapter(load_base_model(tiny_qwen)[0], tmp_path / "adapter")


def research_state_dict(model, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """What the research code's peft saves: base_model.model.<path>.<name>.weight per wrapped linear."""
    out = {}
    for name, module in model.base_model.named_modules():
        if not isinstance(module, PACLoraLinear):
            continue
        d_in, d_out = module.in_features, module.out_features
        for suffix in ("", "1", "2"):
            out[f"base_model.model.{name}.lora_A{suffix}.weight"] = torch.randn(8, d_in, generator=generator) * 0.1
            out[f"base_model.model.{name}.lora_B{suffix}.weight"] = torch.randn(d_out, 8, generator=generator) * 0.1
        for side in ("A", "B"):
            for dense, shape in (("dense1", (32, d_in)), ("dense2", (3, 32))):
                weight = torch.randn(shape, generator=generator) * 0.3
                out[f"base_model.model.{name}.lora_{side}_gate_{dense}.weight"] = weight
    return out


def research_reference_logits(base, weights, input_ids, user_end: int, news_end: int) -> torch.Tensor:
    """The research forward, written from its description: x_news / x_user zero outside their span,
    per-token softmax gates, all expert outputs stacked at full width, then weighted sums."""
    handles = []
    for name, module in base.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.rpartition(".")[2] not in PACLoraConfig().target_modules:
            continue
        w = {key.split(f"{name}.")[1].removesuffix(".weight"): t for key, t in weights.items() if f".{name}." in key}

        def hook(mod, args, output, w=w):
            x = args[0]
            pos = torch.arange(x.shape[1])
            x_user = x * (pos < user_end).float()[None, :, None]
            x_news = x * ((pos >= user_end) & (pos < news_end)).float()[None, :, None]
            gelu = torch.nn.functional.gelu
            g_a = torch.softmax(gelu(x_news @ w["lora_A_gate_dense1"].T) @ w["lora_A_gate_dense2"].T, -1)
            g_b = torch.softmax(gelu(x_user @ w["lora_B_gate_dense1"].T) @ w["lora_B_gate_dense2"].T, -1)
            a_all = torch.stack([x @ w[f"lora_A{s}"].T for s in ("", "1", "2")], dim=2)  # b s n r
            z = (a_all * g_a.unsqueeze(-1)).sum(2)
            b_all = torch.stack([z @ w[f"lora_B{s}"].T for s in ("", "1", "2")], dim=2)  # b s n d_out
            return output + (b_all * g_b.unsqueeze(-1)).sum(2) * (16 / 8)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return base(input_ids=input_ids).logits
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("file_format", ["bin", "safetensors", "dict"])
def test_research_adapter_loads_and_matches_the_research_forward(tiny_qwen, tmp_path, file_format: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, routing="token")
    weights = research_state_dict(model, torch.Generator().manual_seed(3))
    if file_format == "bin":
        source = tmp_path / "adapter_model.bin"
        torch.save(weights, source)
    elif file_format == "safetensors":
        save_file(weights, str(tmp_path / "adapter_model.safetensors"))
        source = tmp_path  # a directory holding the file
    else:
        source = weights
    load_research_adapter(model, source)
    single = batch_of(tokenizer, "token", with_response=False)
    row = {k: v[:1, : int(single["attention_mask"][0].sum())] for k, v in single.items()}
    user_end, news_end = int(single["news_spans"][0, 0]), int(single["news_spans"][0, 1])
    row["user_spans"], row["news_spans"] = single["user_spans"][:1], single["news_spans"][:1]
    assert int(row["user_spans"][0, 0]) == 0 and int(row["user_spans"][0, 1]) == user_end
    reference = load_base_model(tiny_qwen)[0].eval()
    expected = research_reference_logits(reference, weights, row["input_ids"], user_end, news_end)
    torch.testing.assert_close(logits(model, row), expected, atol=1e-5, rtol=1e-5)


def test_research_adapter_needs_token_routing_per_module(tiny_qwen) -> None:
    model = pac(load_base_model(tiny_qwen)[0])
    with pytest.raises(ValueError, match="routing='token', router_scope='module'"):
        load_research_adapter(model, {})


def test_research_adapter_with_missing_keys_is_refused(tiny_qwen) -> None:
    model = pac(load_base_model(tiny_qwen)[0], routing="token")
    weights = research_state_dict(model, torch.Generator().manual_seed(0))
    weights.pop(next(key for key in weights if key.endswith("lora_A_gate_dense1.weight")))
    with pytest.raises(ValueError, match="1 missing"):
        load_research_adapter(model, weights)


def test_layer_routers_are_far_fewer_parameters(tiny_qwen) -> None:
    module_scope = parameter_summary(pac(load_base_model(tiny_qwen)[0]))
    layer_scope = parameter_summary(pac(load_base_model(tiny_qwen)[0], router_scope="layer"))
    assert module_scope.experts == layer_scope.experts
    assert layer_scope.routers * 5 < module_scope.routers
    assert "trainable params:" in str(layer_scope) and layer_scope.trainable < layer_scope.total


@pytest.mark.parametrize("routing", ROUTINGS)
def test_layer_scope_gives_a_target_outside_the_decoder_layers_its_own_routers(tiny_qwen, routing: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, router_scope="layer", routing=routing, target_modules=["q_proj", "down_proj", "lm_head"])
    randomize_adapter(model, scale=0.3)
    lm_head = model.base_model.lm_head
    assert isinstance(lm_head, PACLoraLinear) and isinstance(lm_head.router, RouterPair)
    assert model.base_model.model.layers[0].self_attn.q_proj.router is None  # the layer's pair routes it
    routers = {n.rsplit(".", 1)[0] for n in model.adapter_state_dict() if "router" in n}
    assert routers == {"model.layers.0.pac_lora_router", "model.layers.1.pac_lora_router", "lm_head.router"}
    batch = batch_of(tokenizer, routing, padding_side="left")
    model.train()
    model(**batch).loss.backward()
    gates_a, gates_b = lm_head.router.current
    assert gates_a.shape[:-1] == ((3,) if routing == "sequence" else tuple(batch["input_ids"].shape))
    torch.testing.assert_close(gates_b.sum(-1), torch.ones(gates_b.shape[:-1]), atol=1e-6, rtol=0)
    for name, param in model.adapter_state_dict().items():
        # Token routing leaves the routers of the last layer and lm_head without a gradient (see the
        # gradient test); their experts still learn.
        reaches = routing == "sequence" or "router" not in name
        assert param.grad is not None and (param.grad.abs().sum() > 0 or not reaches), name
    model.eval()
    free = batch_of(tokenizer, routing, padding_side="left", with_response=False)
    assert generate(model, free, use_cache=True).shape[1] == free["input_ids"].shape[1] + 8


def test_a_base_parameter_named_like_a_router_stays_frozen_and_unsaved(tiny_qwen, tmp_path) -> None:
    base, _tokenizer = load_base_model(tiny_qwen)
    base.model.layers[0].mlp.router = torch.nn.Linear(4, 4, bias=False)  # a base model's own "router"
    foreign = base.model.layers[0].mlp.router.weight
    model = pac(base)
    assert not foreign.requires_grad
    assert "model.layers.0.mlp.router.weight" not in model.adapter_state_dict()
    summary = parameter_summary(model)
    reference = parameter_summary(pac(load_base_model(tiny_qwen)[0]))
    assert (summary.experts, summary.routers) == (reference.experts, reference.routers)
    save_adapter(model, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert set(saved) == set(model.adapter_state_dict()) and not any(".mlp.router." in name for name in saved)
    trainable = {name for name, param in model.base_model.named_parameters() if param.requires_grad}
    assert trainable == set(model.adapter_state_dict())


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("gate_mode", ["both", "avg_a", "avg_b", "avg_both"])
def test_parameter_count_formula_matches_the_model(tiny_qwen, scope: str, gate_mode: str) -> None:
    base, _ = load_base_model(tiny_qwen)
    config = base.config
    shapes = {
        name: (module.in_features, module.out_features)
        for name, module in (
            (n.rpartition(".")[2], m) for n, m in base.model.layers[0].named_modules() if isinstance(m, torch.nn.Linear)
        )
    }
    model = pac(base, router_scope=scope, gate_mode=gate_mode)
    summary = parameter_summary(model)
    counts = adapter_parameter_counts(model.pac_config, shapes, config.num_hidden_layers, config.hidden_size)
    assert counts == {"experts": summary.experts, "routers": summary.routers}


@pytest.mark.parametrize("gate_mode", ["avg_a", "avg_b", "avg_both"])
def test_uniform_gate_ablations(tiny_qwen, gate_mode: str) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = pac(base, gate_mode=gate_mode)
    randomize_adapter(model, scale=0.5)
    logits(model, batch_of(tokenizer))
    router = next(m for m in model.modules() if isinstance(m, RouterPair))
    uniform_a, uniform_b = (torch.equal(g, torch.full_like(g, 1 / 3)) for g in router.current)
    assert (uniform_a, uniform_b) == (gate_mode in ("avg_a", "avg_both"), gate_mode in ("avg_b", "avg_both"))


@pytest.mark.parametrize("routing", ROUTINGS)
def test_llama_works_through_the_same_path(tiny_llama, routing: str) -> None:
    base, tokenizer = load_base_model(tiny_llama)
    batch = batch_of(tokenizer, routing, padding_side="left")
    with torch.no_grad():
        expected = base.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    model = pac(base, routing=routing)
    assert torch.equal(logits(model, batch), expected)
    randomize_adapter(model, scale=0.3)
    assert not torch.allclose(logits(model, batch), expected, atol=1e-4)
    if routing == "sequence":
        free = batch_of(tokenizer, routing, padding_side="left", with_response=False)
        assert torch.equal(generate(model, free, use_cache=True), generate(model, free, use_cache=False))


def test_calling_without_spans_says_what_is_missing(qwen) -> None:
    base, tokenizer = qwen
    model = pac(base)
    batch = batch_of(tokenizer)
    with pytest.raises(ValueError, match="needs user_spans and news_spans"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        (torch.tensor([[0, 5]]), "expected 3 rows"),
        (torch.tensor([[0, 5, 6]] * 3), r"shape \[batch, 2\]"),
        (torch.tensor([[5, 2]] * 3), "0 <= start <= end"),
        (torch.tensor([[0.0, 2.0]] * 3), "integer tensor"),
    ],
)
def test_bad_spans_are_explained(qwen, spans, message: str) -> None:
    base, tokenizer = qwen
    model = pac(base)
    batch = batch_of(tokenizer)
    batch["user_spans"] = spans
    with pytest.raises(ValueError, match=message):
        logits(model, batch)


def test_missing_target_modules_and_double_application_are_refused(qwen) -> None:
    base, _ = qwen
    with pytest.raises(ValueError, match=r"no linear named \['query'\].*its linears: \[.*'q_proj'"):
        apply_pac_lora(base, PACLoraConfig(target_modules=["query"]))
    apply_pac_lora(base, PACLoraConfig())
    with pytest.raises(ValueError, match="already carries PAC-LoRA"):
        apply_pac_lora(base, PACLoraConfig())


def test_sequence_gates_route_the_span_means_of_the_input(tiny_qwen) -> None:
    base, tokenizer = load_base_model(tiny_qwen)
    model = apply_pac_lora(base, PACLoraConfig())  # dropout 0.1, in training mode
    randomize_adapter(model, scale=0.5)
    model.train()
    seen = {}
    q_proj = model.base_model.model.layers[1].self_attn.q_proj
    q_proj.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0].detach()))
    batch = batch_of(tokenizer, padding_side="left")
    model(**batch)
    x, router = seen["x"], q_proj.router
    for gates, spans, w_in, w_out in (
        (router.current[0], batch["news_spans"], router.analyze_in, router.analyze_out),
        (router.current[1], batch["user_spans"], router.compose_in, router.compose_out),
    ):
        means = torch.stack([x[row, start:end].mean(0) for row, (start, end) in enumerate(spans.tolist())])
        expected = torch.softmax(torch.nn.functional.gelu(means @ w_in.T) @ w_out.T, dim=-1)
        # Pooled before dropout: the same gates in training and in generation.
        torch.testing.assert_close(gates, expected, atol=1e-6, rtol=1e-5)


def test_command_line_counts_match_the_applied_adapter(tiny_qwen, capsys) -> None:
    from pac_lora.__main__ import main

    for scope in SCOPES:
        assert main([str(tiny_qwen), "--router-scope", scope]) == 0
        out = capsys.readouterr().out
        summary = parameter_summary(apply_pac_lora(load_base_model(tiny_qwen)[0], PACLoraConfig(router_scope=scope)))
        assert f"experts {summary.experts:,}  routers {summary.routers:,}" in out


def test_command_line_rejects_a_directory_without_a_model(tmp_path, capsys) -> None:
    from pac_lora.__main__ import main

    assert main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
