"""PACLoraConfig validation and persistence; build_prompt's labels and spans; collate's padding."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pac_lora import PACLoraConfig, PromptTooLong, build_prompt, collate
from pac_lora.prompt import IGNORE_INDEX

from .conftest import SAMPLES, encode


def test_config_defaults_are_the_research_defaults() -> None:
    config = PACLoraConfig()
    assert (config.num_analyze_experts, config.num_compose_experts, config.r, config.alpha) == (3, 3, 8, 16)
    assert (config.dropout, config.router_hidden, config.scaling) == (0.1, 32, 2.0)
    assert config.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert (config.routing, config.gate_mode, config.router_scope) == ("sequence", "both", "module")


def test_config_round_trips_through_json(tmp_path) -> None:
    config = PACLoraConfig(r=4, routing="token", gate_mode="avg_a", router_scope="layer", target_modules=["q_proj"])
    path = config.save(tmp_path)
    assert json.loads(path.read_text())["format"] == "socialalign-pac-lora"
    assert PACLoraConfig.load(tmp_path) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r: expected a positive integer"),
        ({"num_analyze_experts": 2.5}, "num_analyze_experts: expected a positive integer"),
        ({"dropout": 1.0}, "dropout: expected 0 <= dropout < 1"),
        ({"routing": "tokens"}, "routing: expected one of"),
        ({"gate_mode": "avg"}, "gate_mode: expected one of"),
        ({"router_scope": "model"}, "router_scope: expected one of"),
        ({"target_modules": []}, "target_modules: expected module names"),
    ],
)
def test_bad_config_values_are_named(kwargs, message) -> None:
    field, expected = message.split(": ", 1)
    with pytest.raises(ValueError, match=rf"(?m)^{field}\n  Value error, {re.escape(expected)}"):
        PACLoraConfig(**kwargs)


def test_assignments_are_validated_too() -> None:
    config = PACLoraConfig()
    config.r = 4
    assert config.scaling == 4.0
    with pytest.raises(ValueError, match="expected a positive integer"):
        config.r = 0


def test_unknown_config_field_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['rank'\]"):
        PACLoraConfig.from_dict({"rank": 8})


def test_spans_cover_exactly_their_segments(qwen) -> None:
    _, tokenizer = qwen
    for (user, news, instruction, _response), enc in zip(SAMPLES, encode(tokenizer), strict=True):
        assert tokenizer.decode(enc.input_ids[slice(*enc.user_span)]) == user
        assert tokenizer.decode(enc.input_ids[slice(*enc.news_span)]) == news
        assert enc.user_span[1] == enc.news_span[0]
        instruction_and_after = tokenizer.decode(enc.input_ids[enc.news_span[1] : enc.prompt_length])
        assert instruction_and_after.startswith(instruction)


def test_labels_cover_only_the_response(qwen) -> None:
    _, tokenizer = qwen
    for (*_, response), enc in zip(SAMPLES, encode(tokenizer), strict=True):
        assert all(label == IGNORE_INDEX for label in enc.labels[: enc.prompt_length])
        trained = [label for label in enc.labels if label != IGNORE_INDEX]
        assert trained == enc.input_ids[enc.prompt_length :]
        assert tokenizer.decode(trained) == response + "<|im_end|>"


def test_prompt_is_the_chat_template_generation_prompt(qwen) -> None:
    _, tokenizer = qwen
    user, news, instruction, _ = SAMPLES[0]
    enc = build_prompt(tokenizer, user, news, instruction)
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "你是一个微博用户。"}, {"role": "user", "content": user + news + instruction}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert tokenizer.decode(enc.input_ids) == expected
    assert enc.labels == [IGNORE_INDEX] * len(enc.input_ids)


def test_token_routing_user_span_starts_at_zero(qwen) -> None:
    _, tokenizer = qwen
    sequence, token = encode(tokenizer, "sequence")[0], encode(tokenizer, "token")[0]
    assert token.user_span == (0, sequence.news_span[0])
    assert token.news_span == sequence.news_span
    assert sequence.user_span[0] > 0  # the system prompt and template tokens come first


def test_prompt_longer_than_max_length_is_refused(qwen) -> None:
    _, tokenizer = qwen
    user, news, instruction, response = SAMPLES[0]
    full = build_prompt(tokenizer, user, news, instruction, response)
    with pytest.raises(PromptTooLong, match=f"prompt is {full.prompt_length} tokens"):
        build_prompt(tokenizer, user, news, instruction, response, max_length=full.prompt_length - 1)
    clipped = build_prompt(tokenizer, user, news, instruction, response, max_length=full.prompt_length + 2)
    assert len(clipped) == full.prompt_length + 2 and clipped.input_ids == full.input_ids[: len(clipped)]


def test_template_that_trims_the_message_is_refused(qwen) -> None:
    _, tokenizer = qwen
    tokenizer.chat_template = tokenizer.chat_template.replace("message['content']", "message['content'] | trim")
    with pytest.raises(ValueError, match="changes the user message"):
        build_prompt(tokenizer, "  user ", "news", "instruction ")


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_pads_and_moves_spans_with_the_tokens(qwen, side: str) -> None:
    _, tokenizer = qwen
    encodings = encode(tokenizer)
    batch = collate(encodings, tokenizer.pad_token_id, side)
    width = max(len(e) for e in encodings)
    assert batch["input_ids"].shape == (len(encodings), width)
    for row, enc in enumerate(encodings):
        ids = batch["input_ids"][row]
        user = batch["user_spans"][row].tolist()
        news = batch["news_spans"][row].tolist()
        assert ids[user[0] : user[1]].tolist() == enc.input_ids[slice(*enc.user_span)]
        assert ids[news[0] : news[1]].tolist() == enc.input_ids[slice(*enc.news_span)]
        real = batch["attention_mask"][row].bool()
        assert ids[real].tolist() == enc.input_ids
        assert (batch["labels"][row][~real] == IGNORE_INDEX).all()


segment = st.text(alphabet=st.sampled_from(list("微博新闻用户ab #@\n：，。!?<|>") + ["\u200b", "😀"]), max_size=24)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=segment, news=segment, instruction=segment)
def test_spans_are_the_tokens_overlapping_each_segment(qwen, user: str, news: str, instruction: str) -> None:
    _, tokenizer = qwen
    enc = build_prompt(tokenizer, user, news, instruction)
    text = tokenizer.decode(enc.input_ids)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    start = text.index("<|im_start|>user\n") + len("<|im_start|>user\n")
    for (first, last), (lo, hi) in (
        (enc.user_span, (start, start + len(user))),
        (enc.news_span, (start + len(user), start + len(user) + len(news))),
    ):
        inside = [i for i, (a, b) in enumerate(offsets) if a < hi and b > lo]
        if hi > lo:
            assert (first, last) == (inside[0], inside[-1] + 1)
        else:
            assert first == last


def test_collate_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        collate([], 0)


def test_collated_tensors_are_long(qwen) -> None:
    _, tokenizer = qwen
    batch = collate(encode(tokenizer), tokenizer.pad_token_id)
    assert all(t.dtype == torch.long for t in batch.values())


def test_research_prompt_parts_follow_the_research_wording() -> None:
    from pac_lora import format_history_post, research_prompt_parts

    history = [format_history_post(f"历史{i}") for i in range(4)] + [format_history_post("支持", "奥运会开幕")]
    full = research_prompt_parts("小明", history, "1. 兴趣：体育", "北京发布新政。", "北京新政")
    assert full.user_part.startswith("你的用户名为小明, 以下是你的五条历史博文: \n1. 历史0\n")
    assert "5. 你转发了微博: 奥运会开幕, 并评论说: 支持\n以下是你的用户画像：\n1. 兴趣：体育\n" in full.user_part
    assert full.news_part == "现在你看到了一则新闻: \n北京发布新政。\n关于这个新闻的hashtag #北京新政# 登上了微博热搜"
    assert full.instruction_part.startswith("，请发一条关于hashtag #北京新政# 的微博，请注意：")
    assert full.instruction == full.user_part + full.news_part + full.instruction_part
    no_persona = research_prompt_parts("小明", history, "1. 兴趣：体育", "新闻", "t", "without_persona")
    no_history = research_prompt_parts("小明", history, "1. 兴趣：体育", "新闻", "t", "without_history")
    assert "用户画像" not in no_persona.user_part and "历史博文" in no_persona.user_part
    assert "历史博文:" not in no_history.user_part and "用户画像" in no_history.user_part
    assert "参考你的个人信息、用户画像和这则新闻" in no_history.instruction_part
    with pytest.raises(ValueError, match="variant: expected one of"):
        research_prompt_parts("小明", history, None, "新闻", "t", "no_news")


def test_research_parts_give_spans_over_the_user_and_news_parts(qwen) -> None:
    from pac_lora import research_prompt_parts

    _, tokenizer = qwen
    parts = research_prompt_parts("小明", ["今天天气不错"], "积极", "北京发布新政。", "北京新政")
    enc = build_prompt(tokenizer, parts.user_part, parts.news_part, parts.instruction_part, "支持！")
    assert tokenizer.decode(enc.input_ids[slice(*enc.news_span)]).startswith("现在你看到了一则新闻")
    assert tokenizer.decode(enc.input_ids[slice(*enc.user_span)]).startswith("你的用户名为小明")
