"""Batched generation and prompt encoding, in process (no Ray)."""

from __future__ import annotations

import pytest
import torch

from pac_lora import PACLoraConfig, adapter_format, build_prompt, research_prompt_parts
from pac_lora.layer import PACLoraLinear
from serve.engine import LoadedModel, Row, generate_rows, load_any_adapter, load_base
from serve.prompts import encode
from serve.protocol import ChatPrompt, ResearchPrompt, Sampling, UserProfile

# prompt_and_output: the penalty as Hugging Face applies it, so a row can be checked against generate itself
GREEDY = Sampling(temperature=0, top_p=0.9, top_k=20, repetition_penalty=1.2, max_new_tokens=6,
                  repetition_penalty_scope="prompt_and_output")


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
    short = Sampling(0, 0.9, 20, 1.2, 3, "prompt_and_output")
    sampled = Sampling(0.7, 0.9, 20, 1.2, 5, "prompt_and_output")
    rows = [Row(loaded["alpha"], encoding, GREEDY), Row(loaded["alpha"], encoding, short),
            Row(loaded["alpha"], encoding, sampled), Row(loaded["base"], encoding, GREEDY)]
    out = generate_rows(rows, tokenizer)
    assert sorted(calls) == [("alpha", 1, True), ("alpha", 2, False), ("base", 1, False)]
    assert [c.completion_tokens for c in out[:3]] == [6, 3, 5]
    assert out[1] == generate_rows([rows[1]], tokenizer)[0]  # cut from a longer run = run to its own length


# -- decoding.repetition_penalty_scope: output penalises the generated tokens only ---------------------


def penalised_greedy(model, input_ids: list[int], penalty: float, steps: int) -> list[int]:
    """Greedy decoding by hand, the penalty on the tokens generated so far and never on the prompt's."""
    ids, generated = list(input_ids), []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            for token in set(generated):
                logits[token] = logits[token] * penalty if logits[token] < 0 else logits[token] / penalty
            generated.append(int(logits.argmax()))
            ids.append(generated[-1])
    return generated


def test_the_output_scope_penalises_what_was_generated_and_not_the_prompt(models) -> None:
    from serve.engine import _stop_ids

    loaded, tokenizer = models
    model = loaded["base"]
    output_only = Sampling(0, 1.0, 0, 3.0, max_new_tokens=12, repetition_penalty_scope="output")
    everywhere = Sampling(0, 1.0, 0, 3.0, max_new_tokens=12, repetition_penalty_scope="prompt_and_output")
    rows = [Row(model, encode(tokenizer, p, model.routing, 2048), output_only) for p in prompts()[:3]]
    served = generate_rows(rows, tokenizer)  # one left-padded batch: the padding is not penalised either
    stops = _stop_ids(model.model, tokenizer)
    for row, completion in zip(rows, served, strict=True):
        tokens = penalised_greedy(model.model, row.encoding.input_ids, 3.0, 12)
        kept = tokens[: next((k for k, t in enumerate(tokens) if t in stops), len(tokens))]
        assert completion.text == tokenizer.decode(kept, skip_special_tokens=True).strip()
    prompt_wide = generate_rows([Row(model, row.encoding, everywhere) for row in rows], tokenizer)
    assert [c.text for c in prompt_wide] != [c.text for c in served]


def test_the_output_scope_penalises_before_top_k_as_the_prompt_wide_penalty_does(models) -> None:
    loaded, tokenizer = models
    model = loaded["base"]
    encoding = encode(tokenizer, prompts()[0], model.routing, 2048)
    greedy = Sampling(0, 1.0, 0, 3.0, max_new_tokens=12, repetition_penalty_scope="output")
    top_1 = Sampling(0.7, 1.0, 1, 3.0, max_new_tokens=12, repetition_penalty_scope="output")
    unpenalised = Sampling(0, 1.0, 0, 1.0, max_new_tokens=12, repetition_penalty_scope="output")
    [by_greedy, by_top_1, plain] = generate_rows([Row(model, encoding, s) for s in (greedy, top_1, unpenalised)],
                                                 tokenizer)
    assert by_greedy.text != plain.text  # the penalty changes this output, so the order shows
    assert by_top_1.text == by_greedy.text  # top-1 of the penalised logits, not of the raw ones


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
                           decoding={"temperature": 0, "max_new_tokens": 6,
                                     "repetition_penalty_scope": "prompt_and_output"})
    predictor = Predictor(config)
    [predicted] = predictor(pa.Table.from_pylist([row])).to_pylist()
    encoding = build_prompt(predictor.tokenizer, parts.user_part, parts.news_part, parts.instruction_part)
    assert predicted["prediction"] == peft_generate(tiny_models, encoding.input_ids, 6)
    assert predicted["method"] == "lora" and predictor(pa.Table.from_pylist([row])).schema == PREDICTIONS


# -- preset: research (the research inference's prompt bytes and stop tokens; predict keeps every row) --


def test_the_research_presets_set_exactly_the_fields_they_list() -> None:
    from cluster.config import load_config
    from serve.config import PredictConfig, ServeConfig

    for model in (ServeConfig, PredictConfig):
        default = model().model_dump()
        preset = load_config(model, overrides=["preset=research"], environ={}).model_dump()
        changed = {name for name in default if default[name] != preset[name]} - {"preset", "decoding"}
        changed |= {f"decoding.{k}" for k in default["decoding"] if default["decoding"][k] != preset["decoding"][k]}
        assert changed == set(model.PRESETS["research"]), model.__name__
    assert load_config(ServeConfig, overrides=["preset=research", "decoding.stop_tokens=model"],
                       environ={}).decoding.stop_tokens == "model"  # what you set wins


def test_strip_prompt_end_prompts_as_the_research_inference_in_serve_and_predict(models) -> None:
    import asyncio

    from serve.generator import encode_jobs
    from serve.protocol import Job

    _, tokenizer = models
    prompt = prompts()[0]
    default = encode(tokenizer, prompt, "token", 2048)
    stripped = encode(tokenizer, prompt, "token", 2048, strip_prompt_end=True)
    assert tokenizer.decode(default.input_ids).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(stripped.input_ids) == tokenizer.decode(default.input_ids).removesuffix("\n")
    assert stripped.input_ids == default.input_ids[:-1] and stripped.news_span == default.news_span
    # The Generator encodes its jobs so (ServeConfig.decoding.strip_prompt_end); the chat route never strips.
    jobs = [Job(prompt, GREEDY), Job(prompts()[-1], GREEDY)]
    research, chat = asyncio.run(encode_jobs(tokenizer, jobs, "token", 2048, strip_prompt_end=True))
    assert research == stripped and chat == encode(tokenizer, prompts()[-1], "token", 2048)


def test_eos_and_pad_stops_at_the_pad_token_as_the_research_generate_call(models) -> None:
    import copy

    loaded, tokenizer = models
    row = Row(loaded["alpha"], encode(tokenizer, prompts()[0], "sequence", 2048), GREEDY)
    [free] = generate_rows([row], tokenizer)
    assert free.completion_tokens == GREEDY.max_new_tokens and free.finish_reason == "length"
    # A tokenizer whose pad token is a token this row generates, first at position k >= 1 (one row:
    # nothing is padded, so only where generation stops can change).
    tokens = generate_tokens(loaded["alpha"], row)
    k = next(k for k in range(1, len(tokens)) if tokens[k] not in tokens[:k])
    padded = copy.deepcopy(tokenizer)
    padded.pad_token = padded.convert_ids_to_tokens(tokens[k])
    [model_stops] = generate_rows([row], padded, stop_tokens="model")
    [research_stops] = generate_rows([row], padded, stop_tokens="eos_and_pad")
    assert (model_stops.completion_tokens, model_stops.finish_reason) == (GREEDY.max_new_tokens, "length")
    assert (research_stops.completion_tokens, research_stops.finish_reason) == (k + 1, "stop")
    assert research_stops.text == tokenizer.decode(tokens[:k], skip_special_tokens=True).strip()


def generate_tokens(loaded: LoadedModel, row: Row) -> list[int]:
    ids = torch.tensor([row.encoding.input_ids])
    spans = {"user_spans": torch.tensor([row.encoding.user_span]), "news_spans": torch.tensor([row.encoding.news_span])}
    out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=GREEDY.max_new_tokens, repetition_penalty=1.2, temperature=None,
                                top_p=None, top_k=None, **spans)
    return out[0, ids.shape[1]:].tolist()


def test_predict_research_predicts_prompts_longer_than_1024_tokens(tiny_models) -> None:
    import pyarrow as pa

    from cluster.config import load_config
    from serve.config import PredictConfig
    from serve.predict import Predictor

    prompt = prompts()[0]
    history = ["今天天气不错，出去走走，支持新的交通政策。"] * 120  # a prompt of well over 1024 tokens
    parts = research_prompt_parts(prompt.user.name, history, prompt.user.persona, prompt.news, prompt.topic, "full")
    row = sft_row(parts, prompt.topic)
    overrides = [f"base_model={tiny_models.base}", f"adapter={tiny_models.adapters['beta']}", "method=pac_lora",
                 "decoding.temperature=0", "decoding.max_new_tokens=4"]
    default = Predictor(load_config(PredictConfig, overrides=overrides, environ={}))
    research = Predictor(load_config(PredictConfig, overrides=[*overrides, "preset=research"], environ={}))
    encoding = build_prompt(default.tokenizer, parts.user_part, parts.news_part, parts.instruction_part)
    assert len(encoding.input_ids) > 1024
    assert default(pa.Table.from_pylist([row])).num_rows == 0  # skipped (and logged)
    [predicted] = research(pa.Table.from_pylist([row])).to_pylist()
    assert predicted["prompt_tokens"] == len(encoding.input_ids) - 1  # the research prompt: no final newline


def sft_row(parts, topic: str, user_id: str = "u1") -> dict:
    return {"id": f"t|{user_id}|m1|full", "topic": topic, "user_id": user_id, "mid": "m1", "variant": "full",
            "user_part": parts.user_part, "news_part": parts.news_part, "instruction_part": parts.instruction_part,
            "output": "真实的微博"}


# -- expert gates out ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model_id", "routing"), [("alpha", "sequence"), ("beta", "token")])
def test_rows_that_ask_get_their_prompts_gates_batched_or_alone(models, model_id: str, routing: str) -> None:
    loaded, tokenizer = models
    model = loaded[model_id]
    encodings = [encode(tokenizer, p, routing, 2048) for p in prompts()]
    rows = [Row(model, e, GREEDY, gates="module" if k % 2 == 0 else "layer") for k, e in enumerate(encodings)]
    rows.append(Row(model, encodings[0], GREEDY))  # one row that does not ask
    together = generate_rows(rows, tokenizer)
    assert together[-1].gates is None
    assert [c.text for c in together] == [c.text for c in generate_rows([Row(model, e, GREEDY) for e in
                                                                         [*encodings, encodings[0]]], tokenizer)]
    for row, completion in zip(rows[:-1], together, strict=False):
        [alone] = generate_rows([row], tokenizer)
        assert completion.gates.keys() == alone.gates.keys()
        for name, gates in completion.gates.items():
            assert gates["analyze"] == pytest.approx(alone.gates[name]["analyze"], abs=1e-5)
            assert gates["compose"] == pytest.approx(alone.gates[name]["compose"], abs=1e-5)
            assert sum(gates["analyze"]) == pytest.approx(1.0, abs=1e-5)
    assert list(together[0].gates) == list(model.model.pac_config.target_modules)
    assert all(".layers." in name for name in together[1].gates) and len(together[1].gates) == 14
    # Without a row that asks, nothing is recorded: the model's routing state never holds a record.
    calls = []
    original = type(model.model).record_gates
    try:
        type(model.model).record_gates = lambda self: calls.append(1) or original(self)
        generate_rows([Row(model, encodings[0], GREEDY)], tokenizer)
    finally:
        type(model.model).record_gates = original
    assert calls == []


@pytest.mark.parametrize("model_id", ["base", "lora"])
def test_models_without_routers_report_no_gates(models, model_id: str) -> None:
    loaded, tokenizer = models
    row = Row(loaded[model_id], encode(tokenizer, prompts()[0], "sequence", 2048), GREEDY, gates="module")
    assert generate_rows([row], tokenizer)[0].gates is None


def test_predict_writes_gate_columns_for_a_pac_lora_adapter(tiny_models, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.config import ConfigError
    from cluster.schemas import PREDICTIONS, SFT
    from serve.config import PredictConfig
    from serve.predict import Predictor, run

    prompt = prompts()[0]
    parts = research_prompt_parts(prompt.user.name, ["今天天气不错。"], prompt.user.persona, prompt.news, prompt.topic)
    rows = [sft_row(parts, prompt.topic, user) for user in ("u1", "u2")]
    config = PredictConfig(base_model=str(tiny_models.base), adapter=str(tiny_models.adapters["alpha"]),
                           return_gates=True, samples_per_user=2, decoding={"temperature": 0, "max_new_tokens": 4})
    predictor = Predictor(config)
    table = predictor(pa.Table.from_pylist(rows))
    assert table.schema == PREDICTIONS and table.num_rows == 4
    gates = table["gates"].to_pylist()
    assert [entry["name"] for entry in gates[0]] == list(PACLoraConfig().target_modules)
    assert all(g == gates[0] for g in gates)  # the same prompt: the same gates, every sample and user
    encoding = build_prompt(predictor.tokenizer, parts.user_part, parts.news_part, parts.instruction_part)
    [served] = generate_rows([Row(predictor.model, encoding, GREEDY, gates="module")], predictor.tokenizer)
    written = [w for entry in gates[0] for side in ("analyze", "compose") for w in entry[side]]
    assert written == pytest.approx([w for g in served.gates.values() for side in g for w in g[side]], abs=1e-6)
    layers = Predictor(config.model_copy(update={"gate_detail": "layer"}))(pa.Table.from_pylist(rows[:1]))
    assert len(layers["gates"].to_pylist()[0]) == 14  # 7 modules x 2 layers
    assert Predictor(config.model_copy(update={"return_gates": False}))(
        pa.Table.from_pylist(rows[:1]))["gates"].null_count == 2
    # Only a PAC-LoRA adapter has gates: anything else is a config error before Ray starts.
    (tmp_path / "test").mkdir()
    sft = {field.name: None if field.nullable else "x" for field in SFT} | {"variant": "full"}
    pq.write_table(pa.Table.from_pylist([sft], schema=SFT), tmp_path / "test" / "part-0.parquet")
    for adapter in (str(tiny_models.adapters["lora"]), None):
        with pytest.raises(ConfigError, match="return_gates: only a PAC-LoRA adapter has expert gates"):
            run(config.model_copy(update={"adapter": adapter, "test_path": tmp_path / "test"}))
