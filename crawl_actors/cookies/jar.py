"""Cookie values and their public names: only a `CookieJar` holds values; everything else sees ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_ID = re.compile(r"^[0-9a-f]{10}$")


def cookie_id(value: str) -> str:
    """The public name of a cookie: the first 10 hex characters of sha256(value)."""
    return hashlib.sha256(value.strip().encode()).hexdigest()[:10]


class CookieJar:
    """id -> value for one crawler process; its repr names ids only."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values: dict[str, str] = {}
        for position, raw in enumerate(values):
            value = raw.strip()
            if not value:
                raise ValueError(f"cookie #{position} is empty")
            known = self._values.setdefault(cookie_id(value), value)
            if known != value:
                raise ValueError(f"cookie #{position} shares its id {cookie_id(value)} with another cookie")

    @classmethod
    def from_lines(cls, text: str) -> CookieJar:
        """One cookie a line, as in `CrawlConfig.cookies`; blank lines and `#` comments are skipped."""
        return cls(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))

    @property
    def ids(self) -> list[str]:
        return list(self._values)

    def header(self, cookie_id: str) -> str:
        """The `Cookie:` header value for a granted id."""
        try:
            return self._values[cookie_id]
        except KeyError:
            raise KeyError(f"cookie id {shown_id(cookie_id)} is not in this jar") from None

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"CookieJar({len(self)} cookies: {', '.join(self._values)})"

    __str__ = __repr__


def checked_ids(cookie_ids: Iterable[str]) -> list[str]:
    """The ids, deduplicated, each checked to be an id from cookie_id()."""
    ids = list(dict.fromkeys(cookie_ids))
    for position, cid in enumerate(ids):
        if not isinstance(cid, str) or not _ID.match(cid):
            # Never echo the entry: a cookie value passed here by mistake would end up in a log.
            raise ValueError(f"cookie_ids[{position}] is not an id from cookie_id() (10 lowercase hex chars)")
    if not ids:
        raise ValueError("cookie_ids is empty: the pool needs at least one cookie")
    return ids


def shown_id(cid: object) -> str:
    """An id for a message; anything else might be a cookie value passed by mistake."""
    return repr(cid) if isinstance(cid, str) and _ID.match(cid) else "(not an id from cookie_id())"
