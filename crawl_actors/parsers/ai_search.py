"""AI search JSON -> a topic's summary and the posts it cites.

The local simulator's server-rendered form of ai.s.weibo.com/web/other/ai/blogs2:
`{"ok":1,"data":{"summary":..,"has_more":..,"list":[{"username","user_id","weibo_id","content"}]}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crawl_actors.parsers.base import ParseError, load_json, page_parser, require_ok
from crawl_actors.parsers.text import clean_text


@dataclass
class AiSearchPage:
    summary: str | None
    posts: list[dict[str, Any]]
    has_more: bool


@page_parser
def parse_ai_search(body: str | bytes | dict, url: str) -> AiSearchPage:
    """The AI-search JSON -> the topic's summary and the posts it cites (mid, user_id, screen_name, text)."""
    payload = require_ok(load_json(body, url), url)
    posts = []
    for item in payload.get("list") or []:
        try:
            posts.append({
                "mid": str(item.get("weibo_id") or item["mid"]),
                "user_id": str(item["user_id"]),
                "screen_name": item.get("username"),
                "text": clean_text(item.get("content") or ""),
            })
        except KeyError as error:
            raise ParseError(url, payload, f"AI-search item without {error}") from None
    summary = clean_text(payload.get("summary") or "") or None
    return AiSearchPage(summary=summary, posts=posts, has_more=bool(payload.get("has_more", False)))
