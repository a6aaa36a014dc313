"""The research inference's prompt bytes, reproduced; and the expert gates read out of a prefill."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pac_lora import GateRecord, PACLoraConfig, apply_pac_lora, build_prompt, collate, research_prompt_parts
from pac_lora.layer import PACLoraLinear

from .conftest import SAMPLES, batch_of, randomize_adapter

# -- The research inference's prompt, worked out by hand ----------------------------------------------

HISTORY = ["今天天气不错。", "你转发了微博: 加油！, 并评论说: 支持", "下雨了", "好饿", "周末去爬山"]
# The research dataset's `instruction` for this case (organize_alphca_dataset.py's template for the
# full variant, formatted and .strip()ped), typed out by hand.
RESEARCH_INSTRUCTION = (
    "你的用户名为小明, 以下是你的五条历史博文: \n"
    "1. 今天天气不错。\n"
    "2. 你转发了微博: 加油！, 并评论说: 支持\n"
    "3. 下雨了\n"
    "4. 好饿\n"
    "5. 周末去爬山\n"
    "以下是你的用户画像：\n"
    "积极乐观\n"
    "现在你看到了一则新闻: \n"
    "北京发布了新的交通政策。\n"
    "关于这个新闻的hashtag #北京交通新政# 登上了微博热搜，请发一条关于hashtag #北京交通新政# 的微博，请注意：\n"
    "    - 可以参考你的个人信息、历史博文、用户画像和这则新闻，用自己的风格和立场发表观点\n"
    "    - 这条微博的长度应与你的历史博文相似\n"
    "    - 不要强行参考历史信息\n"
    "    - 仅输出你发表的微博内容"
)
# infer_socialLLM.py: apply_chat_template([system, user], add_generation_prompt=True).rstrip(); with
# the ChatML template (Qwen2.5's, and the tiny model's) that is, byte for byte:
RESEARCH_PROMPT = (
    "<|im_start|>system\n你是一个微博用户。<|im_end|>\n"
    f"<|im_start|>user\n{RESEARCH_INSTRUCTION}<|im_end|>\n"
    "<|im_start|>assistant"
)


def research_inputs(tokenizer) -> dict:
    """What infer_socialLLM.py's preprocess_function computes from RESEARCH_PROMPT."""
    ids = tokenizer(RESEARCH_PROMPT, max_length=2048, truncation=False)["input_ids"]
    news_start = RESEARCH_PROMPT.find("现在你看到了一则新闻")
    news_end = RESEARCH_PROMPT.find("，请发一条关于hashtag")
    return {
        "input_ids": ids,
        "user_mask": len(tokenizer(RESEARCH_PROMPT[:news_start], add_special_tokens=False)["input_ids"]),
        "news_mask": len(tokenizer(RESEARCH_PROMPT[:news_end], add_special_tokens=False)["input_ids"]),
    }


def test_research_parts_are_the_research_instruction() -> None:
    parts = research_prompt_parts("小明", HISTORY, "积极乐观", "北京发布了新的交通政策。", "北京交通新政", "full")
    assert parts.instruction == RESEARCH_INSTRUCTION


def test_stripped_prompt_end_gives_the_research_inference_bytes_tokens_and_spans(qwen) -> None:
    _, tokenizer = qwen
    parts = research_prompt_parts("小明", HISTORY, "积极乐观", "北京发布了新的交通政策。", "北京交通新政", "full")
    research = research_inputs(tokenizer)
    ours = build_prompt(tokenizer, parts.user_part, parts.news_part, parts.instruction_part, routing="token",
                        strip_prompt_end=True)
    assert tokenizer.decode(ours.input_ids) == RESEARCH_PROMPT
    assert ours.input_ids == research["input_ids"]
    # The research masks are span ends: users [0, user_mask), news [user_mask, news_mask).
    assert ours.user_span == (0, research["user_mask"])
    assert ours.news_span == (research["user_mask"], research["news_mask"])
    # Our default keeps the newline the template ends with, as every training row had it.
    default = build_prompt(tokenizer, parts.user_part, parts.news_part, parts.instruction_part, routing="token")
    assert tokenizer.decode(default.input_ids) == RESEARCH_PROMPT + "\n"
    assert default.input_ids == research["input_ids"] + tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert (default.user_span, default.news_span) == (ours.user_span, ours.news_span)


def test_a_training_row_cannot_strip_the_prompt_end(qwen) -> None:
    _, tokenizer = qwen
    user, news, instruction, response = SAMPLES[0]
    with pytest.raises(ValueError, match="strip_prompt_end is for generation prompts"):
        build_prompt(tokenizer, user, news, instruction, response, strip_prompt_end=True)


# -- Expert gates ---------------------------------------------------------------------------------------


def pac(base, **kwargs):
    model = apply_pac_lora(base, PACLoraConfig(dropout=0.0, **kwargs)).eval()
    randomize_adapter(model, scale=0.3)
    return model


def inputs(batch: dict) -> dict:
    return {key: value for key, value in batch.items() if key != "labels"}


def linear_inputs(model, name: str, batch: dict) -> torch.Tensor:
    """The input the wrapped linear `name` saw in a forward of `batch`."""
    seen = []
    handle = model.base_model.get_submodule(name).register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(**inputs(batch))
    finally:
        handle.remove()
    return seen[0]


def route(router, side: str, x: torch.Tensor) -> torch.Tensor:
    w_in, w_out = getattr(router, f"{side}_in"), getattr(router, f"{side}_out")
    return F.linear(F.gelu(F.linear(x, w_in)), w_out).softmax(dim=-1)


def span_rows(spans: torch.Tensor, row: int) -> slice:
    return slice(int(spans[row, 0]), int(spans[row, 1]))


@pytest.mark.parametrize("routing", ["sequence", "token"])
def test_recorded_gates_are_the_routers_on_their_spans(qwen, routing: str) -> None:
    base, tokenizer = qwen
    model = pac(base, routing=routing)
    batch = batch_of(tokenizer, routing, padding_side="left")
    name = "model.layers.1.mlp.down_proj"
    x = linear_inputs(model, name, batch)
    with torch.no_grad(), model.record_gates() as record:
        model(**inputs(batch))
    rows = record.rows("layer")
    router = model.base_model.get_submodule(name).router
    for row in range(x.shape[0]):
        news, user = span_rows(batch["news_spans"], row), span_rows(batch["user_spans"], row)
        if routing == "sequence":  # one gate per sequence, from the span's mean input
            analyze = route(router, "analyze", x[row, news].mean(0))
            compose = route(router, "compose", x[row, user].mean(0))
        else:  # per token; reported: the mean over the span's tokens
            analyze = route(router, "analyze", x[row, news]).mean(0)
            compose = route(router, "compose", x[row, user]).mean(0)
        torch.testing.assert_close(torch.tensor(rows[row][name]["analyze"]), analyze, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(rows[row][name]["compose"]), compose, atol=1e-5, rtol=0)
        assert sum(rows[row][name]["analyze"]) == pytest.approx(1.0, abs=1e-5)
    assert len({tuple(r[name]["analyze"]) for r in rows}) == len(rows)  # each row routes its own way


@pytest.mark.parametrize("scope", ["module", "layer"])
def test_module_detail_averages_each_module_over_the_layers(qwen, scope: str) -> None:
    base, tokenizer = qwen
    model = pac(base, router_scope=scope)
    with torch.no_grad(), model.record_gates() as record:
        model(**inputs(batch_of(tokenizer)))
    layers, modules = record.rows("layer"), record.rows("module")
    wrapped = [name for name, m in model.base_model.named_modules() if isinstance(m, PACLoraLinear)]
    assert list(layers[0]) == wrapped
    assert list(modules[0]) == list(PACLoraConfig().target_modules)
    for row in range(len(layers)):
        for module, gates in modules[row].items():
            paths = [path for path in wrapped if path.endswith("." + module)]
            for side in ("analyze", "compose"):
                expected = torch.tensor([layers[row][path][side] for path in paths]).mean(0)
                torch.testing.assert_close(torch.tensor(gates[side]), expected)
    if scope == "layer":  # a layer's linears share its router
        first_layer = [path for path in wrapped if path.startswith("model.layers.0.")]
        assert len({tuple(layers[0][path]["analyze"]) for path in first_layer}) == 1


@pytest.mark.parametrize("routing", ["sequence", "token"])
def test_generate_records_the_prefill_gates_and_generates_the_same(qwen, routing: str) -> None:
    base, tokenizer = qwen
    model = pac(base, routing=routing)
    batch = batch_of(tokenizer, routing, padding_side="left", with_response=False)
    kwargs = {**inputs(batch), "max_new_tokens": 5, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    plain = model.generate(**kwargs)
    with model.record_gates() as record:
        recorded = model.generate(**kwargs)
    assert torch.equal(plain, recorded)
    assert model._state.gate_record is None  # nothing is recorded outside the block
    together = record.rows("module")
    assert len(together) == batch["input_ids"].shape[0]
    # A row's gates do not depend on the rows it is batched with (left padding shifts the spans).
    for row, (user, news, instruction, _) in enumerate(SAMPLES):
        alone = collate([build_prompt(tokenizer, user, news, instruction, routing=routing)], tokenizer.pad_token_id,
                        padding_side="left")
        with model.record_gates() as single:
            model.generate(**{**kwargs, **inputs(alone)})
        for module, gates in single.rows("module")[0].items():
            for side in ("analyze", "compose"):
                torch.testing.assert_close(torch.tensor(gates[side]), torch.tensor(together[row][module][side]),
                                           atol=1e-5, rtol=0)


def test_uniform_gate_ablations_report_uniform_gates(qwen) -> None:
    base, tokenizer = qwen
    model = pac(base, gate_mode="avg_both")
    with torch.no_grad(), model.record_gates() as record:
        model(**inputs(batch_of(tokenizer)))
    for gates in record.rows("module")[0].values():
        assert gates["analyze"] == pytest.approx([1 / 3] * 3) and gates["compose"] == pytest.approx([1 / 3] * 3)


def test_an_unknown_detail_and_an_empty_record() -> None:
    record = GateRecord({})
    assert record.rows("module") == []
    with pytest.raises(ValueError, match="gate detail: expected one of"):
        record.rows("token")
