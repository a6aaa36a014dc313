"""The configured bounds on one request: what a request asks beyond one is refused (413) naming it."""

from __future__ import annotations

from serve.config import ServeConfig
from serve.protocol import LimitExceeded, Sampling
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
