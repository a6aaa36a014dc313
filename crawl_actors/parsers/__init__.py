"""Parsers for what Weibo serves: s.weibo.com search HTML, m.weibo.cn / weibo.com JSON, AI search JSON.

Rows come back as dicts whose keys are the field names of `cluster/schemas.py`; a body that is not
what its endpoint serves raises `ParseError`, one that says the cookie is blocked raises `Blocked`.
One module per page family (`search`, `mobile`, `ai_search`); `text` reads Weibo's counts, times and
rich text; `base` holds what they share. Formats: shared WEIBO.md.
"""

from crawl_actors.parsers.ai_search import AiSearchPage, parse_ai_search
from crawl_actors.parsers.base import SNIPPET_CHARS, Blocked, ParseError, is_visitor_page, page_parser, raise_if_blocked
from crawl_actors.parsers.mobile import (
    DETAIL_ITEMS,
    DetailPost,
    TimelinePage,
    parse_detail_page,
    parse_details,
    parse_long_text,
    parse_long_text_detail,
    parse_long_text_extend,
    parse_profile,
    parse_region,
    parse_timeline,
)
from crawl_actors.parsers.search import ORDINARY_USER, SearchPage, parse_search_page
from crawl_actors.parsers.text import BEIJING, RichText, clean_text, parse_count, parse_weibo_time

__all__ = [
    "BEIJING",
    "DETAIL_ITEMS",
    "DetailPost",
    "ORDINARY_USER",
    "SNIPPET_CHARS",
    "AiSearchPage",
    "Blocked",
    "ParseError",
    "RichText",
    "SearchPage",
    "TimelinePage",
    "clean_text",
    "is_visitor_page",
    "page_parser",
    "parse_ai_search",
    "parse_count",
    "parse_detail_page",
    "parse_details",
    "parse_long_text",
    "parse_long_text_detail",
    "parse_long_text_extend",
    "parse_profile",
    "parse_region",
    "parse_search_page",
    "parse_timeline",
    "parse_weibo_time",
    "raise_if_blocked",
]
