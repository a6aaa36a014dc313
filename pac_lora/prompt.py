"""The research prompt through the model's own chat template, with user/news spans from offsets.

The user message is user_part + news_part + instruction_part. Span boundaries come from the
character offsets of those segments mapped through the tokenizer's offset mapping, never from
searching decoded text, so any content (even text that repeats the template's markers) is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

SYSTEM_PROMPT = "你是一个微博用户。"
IGNORE_INDEX = -100
_PLACEHOLDER = "\u0000PAC_LORA_CONTENT\u0000"


VARIANTS = ("full", "without_persona", "without_history")
_CHINESE_NUMBERS = "零一两三四五六七八九十"
_REFERENCES = {"full": "历史博文、用户画像", "without_persona": "历史博文", "without_history": "用户画像"}


@dataclass(frozen=True)
class PromptParts:
    """The research prompt's user message in its three parts (their concatenation is the message)."""

    user_part: str
    news_part: str
    instruction_part: str

    @property
    def instruction(self) -> str:
        return self.user_part + self.news_part + self.instruction_part


def format_history_post(text: str, retweet_text: str | None = None) -> str:
    """A history post as the research prompt shows it; a repost shows what was reposted."""
    return f"你转发了微博: {retweet_text}, 并评论说: {text}" if retweet_text else text


def research_prompt_parts(
    user_name: str, history: list[str], persona: str | None, news: str, topic: str, variant: str = "full"
) -> PromptParts:
    """The SocialAlign research prompt (DESIGN.md) for one user and one news item, split into parts.

    `history` holds the retrieved posts already formatted (`format_history_post`); `variant` is
    full | without_persona | without_history (the research ablations).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    user = f"你的用户名为{user_name}, "
    if variant != "without_history":
        count = _CHINESE_NUMBERS[len(history)] if len(history) <= 10 else str(len(history))
        user += f"以下是你的{count}条历史博文: \n" + "".join(f"{i}. {post}\n" for i, post in enumerate(history, 1))
    if variant != "without_persona":
        user += "以下是你的用户画像：\n" + (persona or "").strip() + "\n"
    news_part = f"现在你看到了一则新闻: \n{news.strip()}\n关于这个新闻的hashtag #{topic}# 登上了微博热搜"
    instruction = (
        f"，请发一条关于hashtag #{topic}# 的微博，请注意：\n"
        f"    - 可以参考你的个人信息、{_REFERENCES[variant]}和这则新闻，用自己的风格和立场发表观点\n"
        "    - 这条微博的长度应与你的历史博文相似\n"
        "    - 不要强行参考历史信息\n"
        "    - 仅输出你发表的微博内容"
    )
    return PromptParts(user, news_part, instruction)


class PromptTooLong(ValueError):
    """The prompt alone does not fit in max_length tokens."""


@dataclass(frozen=True)
class PromptEncoding:
    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]
    user_span: tuple[int, int]
    news_span: tuple[int, int]
    prompt_length: int

    def __len__(self) -> int:
        return len(self.input_ids)


def build_prompt(
    tokenizer: Any,
    user_part: str,
    news_part: str,
    instruction_part: str,
    response: str | None = None,
    routing: Literal["sequence", "token"] = "sequence",
    system: str = SYSTEM_PROMPT,
    max_length: int | None = None,
    strip_prompt_end: bool = False,
) -> PromptEncoding:
    """Token ids, response-only labels and [start, end) spans of the user and news parts.

    With routing="token" the user span starts at 0 and runs to the news part (everything before
    it, as the research code does); with "sequence" it covers the user part alone.

    `strip_prompt_end` (a generation prompt only) right-strips the rendered prompt as the research
    inference does (`apply_chat_template(...).rstrip()`): with Qwen's template the prompt then ends
    at `<|im_start|>assistant`, without the newline that training put before every response.
    """
    if strip_prompt_end and response is not None:
        raise ValueError("strip_prompt_end is for generation prompts: a training row keeps the template's newline")
    content = user_part + news_part + instruction_part
    prefix, suffix = _template_around(tokenizer, system, content)
    prompt_text = prefix + content + suffix
    if strip_prompt_end:
        prompt_text = prompt_text.rstrip()
    encoded = tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
    prompt_ids: list[int] = list(encoded["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(pair) for pair in encoded["offset_mapping"]]
    user_chars = (len(prefix), len(prefix) + len(user_part))
    news_chars = (user_chars[1], user_chars[1] + len(news_part))
    news_span = _token_span(offsets, *news_chars)
    user_span = (0, news_span[0]) if routing == "token" else _token_span(offsets, *user_chars)
    if max_length is not None and len(prompt_ids) > max_length:
        raise PromptTooLong(f"prompt is {len(prompt_ids)} tokens, more than max_length={max_length}")
    response_ids = _response_ids(tokenizer, system, content, prompt_text, response) if response is not None else []
    if max_length is not None:
        response_ids = response_ids[: max_length - len(prompt_ids)]
    input_ids = prompt_ids + response_ids
    return PromptEncoding(
        input_ids=input_ids,
        attention_mask=[1] * len(input_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + response_ids,
        user_span=user_span,
        news_span=news_span,
        prompt_length=len(prompt_ids),
    )


def collate(
    encodings: Sequence[PromptEncoding], pad_token_id: int, padding_side: Literal["left", "right"] = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row; spans shift with left padding so they still point at their tokens."""
    if not encodings:
        raise ValueError("collate needs at least one encoding")
    width = max(len(item) for item in encodings)
    rows: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    user_spans, news_spans = [], []
    for item in encodings:
        pad = width - len(item)
        shift = pad if padding_side == "left" else 0
        for key, filler in (("input_ids", pad_token_id), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
            values = getattr(item, key)
            rows[key].append([filler] * pad + values if padding_side == "left" else values + [filler] * pad)
        user_spans.append([item.user_span[0] + shift, item.user_span[1] + shift])
        news_spans.append([item.news_span[0] + shift, item.news_span[1] + shift])
    batch = {key: torch.tensor(value, dtype=torch.long) for key, value in rows.items()}
    batch["user_spans"] = torch.tensor(user_spans, dtype=torch.long)
    batch["news_spans"] = torch.tensor(news_spans, dtype=torch.long)
    return batch


def _template_around(tokenizer: Any, system: str, content: str) -> tuple[str, str]:
    """The text the chat template puts before and after the user message, for a generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; PAC-LoRA prompts need one (chat_template.jinja)")
    rendered = _render(tokenizer, system, _PLACEHOLDER, add_generation_prompt=True)
    if rendered.count(_PLACEHOLDER) != 1:
        raise ValueError("the chat template must place the user message exactly once")
    prefix, suffix = rendered.split(_PLACEHOLDER)
    if _render(tokenizer, system, content, add_generation_prompt=True) != prefix + content + suffix:
        raise ValueError("the chat template changes the user message (e.g. trims it); strip the parts beforehand")
    return prefix, suffix


def _response_ids(tokenizer: Any, system: str, content: str, prompt_text: str, response: str) -> list[int]:
    full = _render(tokenizer, system, content, add_generation_prompt=False, response=response)
    if not full.startswith(prompt_text):
        raise ValueError("the chat template renders the assistant turn differently from its generation prompt")
    # Like the research code, the trailing newline after the end-of-turn token is not trained.
    return list(tokenizer(full[len(prompt_text):].rstrip(), add_special_tokens=False)["input_ids"])


def _render(tokenizer: Any, system: str, content: str, add_generation_prompt: bool, response: str | None = None) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _token_span(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """Tokens overlapping [start_char, end_char); an empty segment gives an empty span at its place."""
    first = next((i for i, (_, end) in enumerate(offsets) if end > start_char), len(offsets))
    if end_char <= start_char:
        return first, first
    inside = (i for i, (start, end) in enumerate(offsets) if start < end_char and end > start_char)
    last = max(inside, default=first - 1)
    return first, last + 1
