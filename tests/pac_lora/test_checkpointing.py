"""Activation checkpointing of a PAC-LoRA model (`PACLoraModel.activation_checkpointing_enable`):
the backward pass recomputes each decoder layer after `forward` has left its routing block, with
the routing state captured when that layer ran forward (tiny Qwen2, fp32, CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch

from pac_lora import PACLoraConfig, apply_pac_lora, load_base_model

from .conftest import batch_of, randomize_adapter

ROUTINGS = ["sequence", "token"]
SCOPES = ["module", "layer"]


def micro_batches(tokenizer, routing: str) -> list[dict[str, torch.Tensor]]:
    """Two micro-batches of the same tokens whose spans differ (the second swaps user and news), so
    that only the routing state tells their recomputations apart."""
    first = batch_of(tokenizer, routing)
    second = {**first, "user_spans": first["news_spans"].clone(), "news_spans": first["user_spans"].clone()}
    return [first, second]


def trained_model(tiny_qwen, routing: str, scope: str, dropout: float = 0.1):
    base, tokenizer = load_base_model(tiny_qwen)
    model = apply_pac_lora(base, PACLoraConfig(routing=routing, router_scope=scope, dropout=dropout))
    randomize_adapter(model, seed=1)  # non-zero compose experts: every expert and router gets gradient
    return model.train(), tokenizer


def forward_forward_backward_backward(model, batches) -> tuple[list[float], dict[str, torch.Tensor | None]]:
    """Both forwards first, then both backward passes: each recomputation runs after the other
    micro-batch's forward, so it only gets the right spans if they were captured per forward."""
    torch.manual_seed(7)  # the same dropout masks with and without checkpointing
    losses = [model(**batch).loss for batch in batches]
    for loss in losses:
        loss.backward()
    grads = {name: (None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()
             if p.requires_grad}
    return [float(loss.detach()) for loss in losses], grads


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("scope", SCOPES)
def test_checkpointing_gives_the_same_loss_and_adapter_gradients(tiny_qwen, routing: str, scope: str) -> None:
    reference, tokenizer = trained_model(tiny_qwen, routing, scope)
    batches = micro_batches(tokenizer, routing)
    expected_losses, expected = forward_forward_backward_backward(reference, batches)

    model, _ = trained_model(tiny_qwen, routing, scope)
    model.gradient_checkpointing_enable()
    assert model.base_model.is_activation_checkpointing
    assert model.base_model.config.use_cache is False
    losses, grads = forward_forward_backward_backward(model, batches)

    assert expected_losses[0] != pytest.approx(expected_losses[1])  # the spans matter
    assert losses == pytest.approx(expected_losses, rel=1e-6)
    assert set(grads) == set(expected)
    with_grad = [name for name, grad in expected.items() if grad is not None and grad.abs().sum() > 0]
    assert any("router" in name or "analyze_in" in name for name in with_grad)  # routers among them
    assert any(name.endswith(".analyze") for name in with_grad) and any(name.endswith(".compose") for name in with_grad)
    for name, grad in expected.items():
        if grad is None:
            continue
        assert grads[name] is not None, f"{name}: no gradient under checkpointing"
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("routing", ROUTINGS)
def test_the_base_models_own_checkpointing_loses_the_spans(tiny_qwen, routing: str) -> None:
    """Why the method exists: checkpointing turned on in the base model alone recomputes without spans."""
    model, tokenizer = trained_model(tiny_qwen, routing, "module")
    model.base_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss = model(**batch_of(tokenizer, routing)).loss
    with pytest.raises(ValueError, match="PAC-LoRA routing needs user_spans and news_spans"):
        loss.backward()


def test_a_forward_with_the_adapter_disabled_is_recomputed_without_it(tiny_qwen) -> None:
    model, tokenizer = trained_model(tiny_qwen, "sequence", "module", dropout=0.0)
    batch = batch_of(tokenizer)
    model.activation_checkpointing_enable()
    with torch.no_grad(), model.disable_adapter():
        expected = model(**batch).loss
    with model.disable_adapter():
        loss = model(**batch).loss
    loss.backward()  # after the block: the recomputation must run without the adapter too
    assert float(loss.detach()) == pytest.approx(float(expected))
    assert all(param.grad is None for param in model.adapter_state_dict().values())


def test_both_names_work_without_transformers_deprecation_warning(tiny_qwen) -> None:
    for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
        model, tokenizer = trained_model(tiny_qwen, "sequence", "layer")
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            getattr(model, name)()
        model(**batch_of(tokenizer)).loss.backward()
        assert model.base_model.is_activation_checkpointing, name


def test_a_context_fn_of_yours_runs_inside_and_reentrant_is_refused(tiny_qwen) -> None:
    model, tokenizer = trained_model(tiny_qwen, "token", "module")
    entered: list[str] = []

    class Note:
        def __init__(self, what: str) -> None:
            self.what = what

        def __enter__(self) -> None:
            entered.append(self.what)

        def __exit__(self, *exc: object) -> None:
            return None

    with pytest.raises(ValueError, match="non-reentrant"):
        model.activation_checkpointing_enable({"use_reentrant": True})
    model.activation_checkpointing_enable({"context_fn": lambda: (Note("forward"), Note("recompute"))})
    model(**batch_of(tokenizer, "token")).loss.backward()
    layers = model.base_model.config.num_hidden_layers
    assert entered.count("forward") == layers and entered.count("recompute") == layers
