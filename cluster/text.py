"""Weibo text shapes every stage reads the same way."""

from __future__ import annotations

import re

_HASHTAG = re.compile(r"#([^#]+)#")


def hashtags(text: str | None) -> list[str]:
    """The #topics# of a text, in order (a `#` without its closing one is no hashtag)."""
    return _HASHTAG.findall(text or "")
