"""Prompts to token ids with user and news spans, for the research prompt and for chat messages.

Research prompts go through `pac_lora.research_prompt_parts` + `build_prompt`, exactly as in
training, so the spans are the trained ones. A chat conversation has no user/news structure:
both routers read the last user message (its tokens are found through the tokenizer's offset
mapping, as build_prompt does); with token routing the user span starts at 0, as in training.
If the chat template rewrites that message, both spans cover the whole prompt instead.
"""

from __future__ import annotations

from typing import Any

from pac_lora import (
    PromptEncoding,
    PromptTooLong,
    build_prompt,
    format_history_post,
    research_prompt_parts,
)
from serve.protocol import (
    ChatPrompt,
    InvalidPrompt,
    LimitExceeded,
    ResearchPrompt,
    UserProfile,
)

_MARK = "\u0000SOCIALALIGN_LAST_USER_MESSAGE\u0000"
IGNORE_INDEX = -100


def encode(
    tokenizer: Any, prompt: ResearchPrompt | ChatPrompt, routing: str, max_tokens: int, strip_prompt_end: bool = False
) -> PromptEncoding:
    """`strip_prompt_end` (research prompts only) right-strips the rendered prompt as the research inference does."""
    if isinstance(prompt, ChatPrompt):
        return chat_encoding(tokenizer, prompt, routing, max_tokens)
    return research_encoding(tokenizer, prompt, routing, max_tokens, strip_prompt_end)


def research_encoding(
    tokenizer: Any, prompt: ResearchPrompt, routing: str, max_tokens: int, strip_prompt_end: bool = False
) -> PromptEncoding:
    user = prompt.user or UserProfile(name="")
    history = [format_history_post(text, reposted) for text, reposted in user.history]
    parts = research_prompt_parts(user.name, history, user.persona, prompt.news, prompt.topic, prompt.variant)
    user_part = parts.user_part if prompt.user_part is None else prompt.user_part
    try:
        return build_prompt(
            tokenizer, user_part, parts.news_part, parts.instruction_part, routing=routing, max_length=max_tokens,
            strip_prompt_end=strip_prompt_end,
        )
    except PromptTooLong as error:
        message = str(error).replace("max_length", "max_prompt_tokens")  # "prompt is N tokens, more than ..."
        raise LimitExceeded(("body",), "max_prompt_tokens", max_tokens, message) from None


def chat_encoding(tokenizer: Any, prompt: ChatPrompt, routing: str, max_tokens: int) -> PromptEncoding:
    messages = [{"role": role, "content": content} for role, content in prompt.messages]
    users = [i for i, (role, _) in enumerate(prompt.messages) if role == "user"]
    if not users:
        raise InvalidPrompt(("body", "messages"), "needs at least one message with role 'user'")
    last = users[-1]
    text = _render(tokenizer, messages)
    marked = [dict(message) for message in messages]
    marked[last]["content"] = _MARK
    with_mark = _render(tokenizer, marked)
    content = messages[last]["content"]
    start, end = 0, len(text)
    if with_mark.count(_MARK) == 1:
        prefix, suffix = with_mark.split(_MARK)
        if prefix + content + suffix == text:
            start, end = len(prefix), len(prefix) + len(content)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    if len(ids) > max_tokens:
        raise LimitExceeded(
            ("body", "messages"), "max_prompt_tokens", max_tokens,
            f"prompt is {len(ids)} tokens, more than max_prompt_tokens={max_tokens}",
        )
    span = token_span([tuple(pair) for pair in encoded["offset_mapping"]], start, end)
    user_span = (0, span[1]) if routing == "token" else span
    return PromptEncoding(
        input_ids=ids,
        attention_mask=[1] * len(ids),
        labels=[IGNORE_INDEX] * len(ids),
        user_span=user_span,
        news_span=span,
        prompt_length=len(ids),
    )


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises its own errors for conversations a template refuses
        raise InvalidPrompt(("body", "messages"), f"the chat template refuses these messages: {error}") from None


def token_span(offsets: list[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens overlapping [start_char, end_char); empty text: an empty span at its place."""
    first = next((i for i, (_, end) in enumerate(offsets) if end > start_char), len(offsets))
    inside = [i for i, (start, end) in enumerate(offsets) if start < end_char and end > start_char]
    return (first, inside[-1] + 1) if inside and end_char > start_char else (first, first)
