"""What every page parser shares: its two errors, the `page_parser` wrapper, JSON loading and the
pages that say a cookie is blocked.

Every parser takes the body as received and the URL it came from, and either returns plain Python
values or raises:

- `Blocked` when the body says the cookie is dead or unwelcome: the Sina Visitor System page
  (`visitor_page`), `{"ok": -100, ...}` (`login_required`), the gateway's 432 page (`bot_rejected`),
  its 418/414 pages (`rate_limited`). Prefer the HTTP status where you have it; these are for bodies.
- `ParseError` when the body is not what the endpoint serves (truncated, not JSON, layout drift).
  It carries the URL and the start of the body, for the crawl's error table.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

SNIPPET_CHARS = 200


class ParseError(Exception):
    """A body that is not what its endpoint serves. `snippet` is the start of the body."""

    def __init__(self, url: str, body: str | bytes | dict | None, reason: str) -> None:
        self.url = url
        self.snippet = _snippet(body)
        self.reason = reason
        super().__init__(f"{reason} (url {url}; body starts {self.snippet[:80]!r})")


_Parser = TypeVar("_Parser", bound=Callable[..., Any])
# What a body of the wrong shape raises from plain Python code: a count that is not a number, a field
# of the wrong type, a missing key, nesting too deep to walk (HTML or JSON thousands of levels deep
# raises RecursionError). Inside a page parser all of it means "not what this endpoint serves".
SHAPE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)
_SHAPE_ERRORS = SHAPE_ERRORS


def page_parser(parse: _Parser) -> _Parser:
    """A parser of one fetched page, called as parse(body, url, ...): any shape error in it becomes a
    ParseError carrying the URL and the start of the body, so a bad page never escapes untyped."""

    @functools.wraps(parse)
    def typed(body: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(body, url, *args, **kwargs)
        except _SHAPE_ERRORS as error:
            raise ParseError(url, body, f"{parse.__name__}: {type(error).__name__}: {error}") from error

    return typed  # type: ignore[return-value]


class Blocked(Exception):
    """The body says this cookie gets no content: visitor_page | login_required | bot_rejected | rate_limited."""

    def __init__(self, url: str, reason: str, detail: str = "") -> None:
        self.url = url
        self.reason = reason
        self.detail = detail
        super().__init__(f"blocked ({reason}) at {url}" + (f": {detail}" if detail else ""))


_VISITOR_MARKERS = ("<title>Sina Visitor System</title>", "/visitor/genvisitor2", "passport.weibo.com/sso/v2/login")
_GATEWAY_TITLE = re.compile(r"<title>\s*(432|418|414)\b", re.IGNORECASE)
_GATEWAY_REASONS = {"432": "bot_rejected", "418": "rate_limited", "414": "rate_limited"}


def is_visitor_page(html: str) -> bool:
    head = html[:12_000]  # the visitor page is ~9 KB and names itself early; result pages are far larger
    return any(marker in head for marker in _VISITOR_MARKERS)


def raise_if_blocked(body: str, url: str) -> None:
    """Raise Blocked if an HTML body is the visitor page or a gateway rejection (432/418/414)."""
    if is_visitor_page(body):
        raise Blocked(url, "visitor_page")
    if match := _GATEWAY_TITLE.search(body[:2000]):
        raise Blocked(url, _GATEWAY_REASONS[match[1]], f"HTTP {match[1]} page")


def load_json(body: str | bytes | dict, url: str) -> dict[str, Any]:
    if isinstance(body, dict):
        data: Any = body
    else:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            raise_if_blocked(text, url)
            raise ParseError(url, text, "body is not JSON") from None
        if not isinstance(data, dict):
            raise ParseError(url, text, "JSON body is not an object")
    if data.get("ok") == -100:
        raise Blocked(url, "login_required", str(data.get("url") or data.get("msg") or ""))
    return data


def is_nothing_here(data: dict[str, Any]) -> bool:
    """The end-of-list / unknown-user reply; other ok=0 replies are errors worth a retry."""
    return data.get("ok") == 0 and "没有内容" in str(data.get("msg") or "这里还没有内容")


def require_ok(data: dict[str, Any], url: str) -> dict[str, Any]:
    if data.get("ok") != 1 or not isinstance(data.get("data"), dict):
        raise ParseError(url, data, f"expected ok=1 with data, got ok={data.get('ok')!r} msg={data.get('msg')!r}")
    return data["data"]


_PIC_PATH = re.compile(r"^(?:https?:)?//([^/]+)/[^/]+/(.+)$")


def large_pic(src: str) -> str:
    """The full-size version of a picture URL (//host/<size>/<file> -> https://host/large/<file>)."""
    match = _PIC_PATH.match(src.strip())
    if match is None:
        raise ValueError(f"picture URL {src!r} is not //host/<size>/<file>")
    return f"https://{match[1]}/large/{match[2]}"


def _snippet(body: str | bytes | dict | None) -> str:
    if body is None:
        return ""
    if isinstance(body, dict):
        try:
            body = json.dumps(body, ensure_ascii=False)
        except (ValueError, RecursionError):
            body = "<a JSON object nested too deep to show>"
    if isinstance(body, bytes):
        body = body[: SNIPPET_CHARS * 4].decode("utf-8", "replace")
    return body[:SNIPPET_CHARS]
