"""The configured bounds on one request: what a request asks beyond one is refused (413) naming it.

Besides each field's own bound, a request's whole work is bounded (`check_work`): the rows it would
generate (prompts x samples, `max_rows_per_request`) and the characters of all its prompts together
(`max_prompt_chars_per_request`), so no request within the limits is one the server cannot take.
"""

from __future__ import annotations

from serve.config import ServeConfig
from serve.protocol import ChatPrompt, Job, LimitExceeded, ResearchPrompt, Sampling
from serve.schemas import Decoding, HistoryPost, User


class Limits:
    """Checks a request's texts, counts and decoding against `config`; `loc` is the field's path."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config

    def sampling(self, decoding: Decoding, loc: tuple, tokens_field: str = "max_new_tokens") -> Sampling:
        """The request's decoding over the config's defaults, within max_new_tokens_limit."""
        defaults = self.config.decoding
        chosen = {name: getattr(decoding, name) for name in type(decoding).model_fields}
        merged = {name: getattr(defaults, name) if value is None else value for name, value in chosen.items()}
        limit = self.config.max_new_tokens_limit
        if merged["max_new_tokens"] > limit:
            raise LimitExceeded(
                (*loc, tokens_field), "max_new_tokens_limit", limit,
                f"{tokens_field}: at most {limit} (max_new_tokens_limit), got {merged['max_new_tokens']}",
            )
        return Sampling(**merged)

    def check_user(self, loc: tuple, user: User) -> None:
        self.check_texts(loc, name=user.name, persona=user.persona)
        self.check_count((*loc, "history"), len(user.history), "max_history_posts")
        for index, post in enumerate(user.history):
            if isinstance(post, HistoryPost):
                self.check_texts((*loc, "history", index), text=post.text, retweet_text=post.retweet_text)
            else:
                self.check_text((*loc, "history", index), post)

    def check_texts(self, loc: tuple, **texts: str | None) -> None:
        for name, text in texts.items():
            self.check_text((*loc, name), text)

    def check_text(self, loc: tuple, text: str | None) -> None:
        limit = self.config.max_text_chars
        if text is not None and len(text) > limit:
            message = f"at most {limit} characters (max_text_chars), got {len(text)}"
            raise LimitExceeded(loc, "max_text_chars", limit, message)

    def check_count(self, loc: tuple, value: int, limit_name: str) -> None:
        limit = getattr(self.config, limit_name)
        if value > limit:
            raise LimitExceeded(loc, limit_name, limit, f"at most {limit} ({limit_name}), got {value}")

    def check_work(self, jobs: list[Job], asked: str) -> None:
        """The request's rows and prompt characters within the per-request budget; `asked` says
        what the rows came from (e.g. "3 users x 2 samples_per_user"), for the message."""
        rows = sum(job.n for job in jobs)
        limit = self.config.max_rows_per_request
        if rows > limit:
            raise LimitExceeded(
                ("body",), "max_rows_per_request", limit,
                f"this request asks for {asked} = {rows} generated posts, more than max_rows_per_request={limit}; "
                "ask for fewer users or samples",
            )
        chars = sum(prompt_chars(job.prompt) for job in jobs)
        limit = self.config.max_prompt_chars_per_request
        if chars > limit:
            raise LimitExceeded(
                ("body",), "max_prompt_chars_per_request", limit,
                f"the prompts of this request hold {chars} characters, more than "
                f"max_prompt_chars_per_request={limit}",
            )


def prompt_chars(prompt: ResearchPrompt | ChatPrompt) -> int:
    """The characters a prompt brings to tokenisation (its texts, not the template around them)."""
    if isinstance(prompt, ChatPrompt):
        return sum(len(content) for _, content in prompt.messages)
    chars = len(prompt.news) + len(prompt.topic)
    if prompt.user_part is not None:
        return chars + len(prompt.user_part)
    if prompt.user is not None:
        chars += len(prompt.user.name) + len(prompt.user.persona or "")
        chars += sum(len(text) + len(reposted or "") for text, reposted in prompt.user.history)
    return chars
