"""Batched generation and prompt encoding, in process (no Ray)."""

from __future__ import annotations

import pytest
import torch

from pac_lora import adapter_format, build_prompt, research_prompt_parts
from pac_lora.layer import PACLoraLinear
from serve.engine import LoadedModel, Row, generate_rows, load_any_adapter, load_base
from serve.prompts import encode
from serve.protocol import ChatPrompt, ResearchPrompt, Sampling, UserProfile

GREEDY = Sampling(temperature=0, top_p=0.9, top_k=20, repetition_penalty=1.2, max_new_tokens=6)


@pytest.fixture(scope="module")
def models(tiny_models):
    base, tokenizer = load_base(str(tiny_models.base), device="cpu")
    loaded = {"base": LoadedModel("base", base, "sequence", takes_spans=False)}
    for adapter_id, directory in tiny_models.adapters.items():
        loaded[adapter_id] = load_any_adapter(base, adapter_id, directory)
    return loaded, tokenizer


def prompts() -> list[ResearchPrompt | ChatPrompt]:
    found: list[ResearchPrompt | ChatPrompt] = [
        ResearchPrompt(
            news="北京发布了新的交通政策。" * k, topic="北京交通新政", variant="full",
            user=UserProfile(f"用户{k}", (("今天天气不错。", None), ("支持", "加油")) * k, "积极乐观"),
        )
        for k in (1, 2, 3)
    ]
    found.append(ResearchPrompt(news="上海暴雨。", topic="上海暴雨", variant="without_history", user_part=None,
                                user=UserProfile("小红", (), "爱抱怨")))
    found.append(ChatPrompt((("system", "你是一个微博用户。"), ("user", "说说今天的新闻"))))
    return found


@pytest.mark.parametrize("model_id", ["alpha", "beta", "lora", "base"])
def test_a_batch_gives_each_row_what_it_gets_alone(models, model_id: str) -> None:
    loaded, tokenizer = models
    model = loaded[model_id]
    rows = [Row(model, encode(tokenizer, p, model.routing, 2048), GREEDY) for p in prompts()]
    assert len({len(row.encoding) for row in rows}) == len(rows)  # every row is padded differently
    together = generate_rows(rows, tokenizer)
    alone = [generate_rows([row], tokenizer)[0] for row in rows]
    assert together == alone
    assert len({c.text for c in together}) > 1


def test_rows_are_grouped_by_model_and_decoding_and_cut_to_their_own_length(models, monkeypatch) -> None:
    loaded, tokenizer = models
    calls = []
    for model in loaded.values():
        original = model.model.generate

        def counting(*args, _original=original, _id=model.model_id, **kwargs):
            calls.append((_id, kwargs["input_ids"].shape[0], kwargs["do_sample"]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(model.model, "generate", counting)
    encoding = encode(tokenizer, prompts()[0], "sequence", 2048)
    short = Sampling(0, 0.9, 20, 1.2, max_new_tokens=3)
    sampled = Sampling(0.7, 0.9, 20, 1.2, max_new_tokens=5)
    rows = [Row(loaded["alpha"], encoding, GREEDY), Row(loaded["alpha"], encoding, short),
            Row(loaded["alpha"], encoding, sampled), Row(loaded["base"], encoding, GREEDY)]
    out = generate_rows(rows, tokenizer)
    assert sorted(calls) == [("alpha", 1, True), ("alpha", 2, False), ("base", 1, False)]
    assert [c.completion_tokens for c in out[:3]] == [6, 3, 5]
    assert out[1] == generate_rows([rows[1]], tokenizer)[0]  # cut from a longer run = run to its own length


def test_adapters_share_the_base_weights_and_leave_the_base_model_alone(models) -> None:
    loaded, _ = models
    base = loaded["base"].model
    assert not any(isinstance(module, PACLoraLinear) for module in base.modules())
    own = {id(param) for param in base.parameters()}
    for adapter_id in ("alpha", "beta"):
        wrapped = loaded[adapter_id].model
        frozen = [p for p in wrapped.base_model.parameters() if not p.requires_grad]
        assert frozen and all(id(p) in own for p in frozen)
        assert not wrapped.training
    assert loaded["beta"].routing == "token" and loaded["alpha"].routing == "sequence"


def test_research_prompts_are_encoded_exactly_as_in_training(models) -> None:
    _, tokenizer = models
    prompt = prompts()[1]
    history = ["今天天气不错。", "你转发了微博: 加油, 并评论说: 支持"] * 2
    parts = research_prompt_parts(prompt.user.name, history, prompt.user.persona, prompt.news, prompt.topic, "full")
    for routing in ("sequence", "token"):
        expected = build_prompt(tokenizer, parts.user_part, parts.news_part, parts.instruction_part, routing=routing)
        assert encode(tokenizer, prompt, routing, 2048) == expected


def test_chat_spans_cover_the_last_user_message(models) -> None:
    _, tokenizer = models
    content = "hello there, what do you think of the news?"
    chat = ChatPrompt((("user", "earlier question"), ("assistant", "earlier answer"), ("user", content)))
    sequence = encode(tokenizer, chat, "sequence", 2048)
    start, end = sequence.news_span
    assert sequence.user_span == sequence.news_span
    assert tokenizer.decode(sequence.input_ids[start:end]) == content
    token = encode(tokenizer, chat, "token", 2048)
    assert token.user_span == (0, end) and token.news_span == (start, end)


def test_generation_uses_no_gradient_memory(models) -> None:
    loaded, tokenizer = models
    row = Row(loaded["alpha"], encode(tokenizer, prompts()[0], "sequence", 2048), GREEDY)
    with torch.enable_grad():
        generate_rows([row], tokenizer)
    assert all(p.grad is None for p in loaded["alpha"].model.parameters())


# -- The peft LoRA baseline (`socialalign train method=lora`): served without spans ------------------


def peft_generate(tiny_models, input_ids: list[int], max_new_tokens: int) -> str:
    """What peft itself generates greedily for one prompt: a fresh base model, the adapter loaded by peft."""
    from peft import PeftModel

    from pac_lora import load_base_model

    fresh, tokenizer = load_base_model(tiny_models.base)
    direct = PeftModel.from_pretrained(fresh, str(tiny_models.adapters["lora"])).eval()
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        out = direct.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=max_new_tokens, repetition_penalty=1.2, temperature=None, top_p=None,
                              top_k=None, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_a_peft_lora_answers_as_peft_does_on_the_shared_base_weights(models, tiny_models) -> None:
    loaded, tokenizer = models
    lora = loaded["lora"]
    assert adapter_format(tiny_models.adapters["lora"]) == "lora" and adapter_format(tiny_models.base) is None
    assert not lora.takes_spans and not lora.model.training
    own = {id(param) for param in loaded["base"].model.parameters()}
    base_weights = [p for name, p in lora.model.named_parameters() if "lora_" not in name]
    assert base_weights and all(id(p) in own for p in base_weights)
    encoding = encode(tokenizer, prompts()[0], lora.routing, 2048)
    served = generate_rows([Row(lora, encoding, GREEDY)], tokenizer)[0].text
    zero_shot = generate_rows([Row(loaded["base"], encoding, GREEDY)], tokenizer)[0].text
    assert served != zero_shot
    assert served == peft_generate(tiny_models, encoding.input_ids, GREEDY.max_new_tokens)


def test_predict_in_process_loads_a_peft_lora(tiny_models) -> None:
    import pyarrow as pa

    from cluster.schemas import PREDICTIONS
    from serve.config import PredictConfig
    from serve.predict import Predictor

    prompt = prompts()[0]
    history = ["今天天气不错。", "你转发了微博: 支持, 并评论说: 加油"]
    parts = research_prompt_parts(prompt.user.name, history, prompt.user.persona, prompt.news, prompt.topic, "full")
    row = {"id": "t|u1|m1|full", "topic": prompt.topic, "user_id": "u1", "mid": "m1", "variant": "full",
           "user_part": parts.user_part, "news_part": parts.news_part, "instruction_part": parts.instruction_part,
           "output": "真实的微博"}
    config = PredictConfig(base_model=str(tiny_models.base), adapter=str(tiny_models.adapters["lora"]), method="lora",
                           decoding={"temperature": 0, "max_new_tokens": 6})
    predictor = Predictor(config)
    [predicted] = predictor(pa.Table.from_pylist([row])).to_pylist()
    encoding = build_prompt(predictor.tokenizer, parts.user_part, parts.news_part, parts.instruction_part)
    assert predicted["prediction"] == peft_generate(tiny_models, encoding.input_ids, 6)
    assert predicted["method"] == "lora" and predictor(pa.Table.from_pylist([row])).schema == PREDICTIONS
