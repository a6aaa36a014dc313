"""m.weibo.cn and weibo.com JSON -> users, their details, their timelines, long texts and regions.

- `api/container/getIndex?containerid=..`: 100505<uid> profile (`data.userInfo`), 230283<uid>_-_INFO
  details (card_type 41 items), 107603<uid> / 230413<uid> timeline (card_type 9 cards with `mblog`),
  `{"ok":0,"msg":"这里还没有内容"}` past the end or for an unknown user.
- Long text: m.weibo.cn/detail/<mid> (`var $render_data = [{.."status":{..}..}][0] || {};`) and
  m.weibo.cn/statuses/extend?id=<mid> (`data.longTextContent`). A timeline's text of a long post is
  cut, and so are its hashtags and @users: `parse_long_text` gives all three in full.
- weibo.com/ajax/statuses/show?id=<bid>: `region_name` ("发布于 北京").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crawl_actors.parsers.base import (
    ParseError,
    is_nothing_here,
    large_pic,
    load_json,
    page_parser,
    raise_if_blocked,
    require_ok,
)
from crawl_actors.parsers.text import RichText, clean_text, parse_count, parse_weibo_time, rich_html


@dataclass
class TimelinePage:
    posts: list[dict[str, Any]]
    since_id: str | None
    end: bool  # this page has no posts: the list ended before it
    needs_long_text: list[str]
    errors: list[ParseError] = field(default_factory=list)
    last: bool = False  # no page follows this one (cardlistInfo without a since_id)


@page_parser
def parse_profile(body: str | bytes | dict, url: str) -> dict[str, Any] | None:
    """containerid=100505<uid> -> the USERS profile fields; None for an unknown user."""
    data = load_json(body, url)
    if is_nothing_here(data):
        return None
    info = require_ok(data, url).get("userInfo")
    if not isinstance(info, dict) or "id" not in info:
        raise ParseError(url, data, "profile without data.userInfo.id")
    return {
        "user_id": str(info["id"]),
        "screen_name": info.get("screen_name"),
        "gender": info.get("gender"),
        "description": clean_text(info.get("description") or "") or None,
        "statuses_count": parse_count(info.get("statuses_count")),
        "followers_count": parse_count(info.get("followers_count")),
        "follow_count": parse_count(info.get("follow_count")),
        "verified": bool(info.get("verified", False)),
        "verified_type": _int_or_none(info.get("verified_type")),
        "verified_reason": clean_text(info.get("verified_reason") or "") or None,
        "urank": _int_or_none(info.get("urank")),
        "mbrank": _int_or_none(info.get("mbrank")),
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


DETAIL_ITEMS = {
    "生日": "birthday",
    "所在地": "location",
    "大学": "education",
    "学校": "education",
    "公司": "company",
    "注册时间": "registered",
    "阳光信用": "sunshine_credit",
    "IP属地": "ip_region",
}


@page_parser
def parse_details(body: str | bytes | dict, url: str) -> dict[str, str]:
    """containerid=230283<uid>_-_INFO -> the detail fields the user shows (absent keys for the others)."""
    data = load_json(body, url)
    if is_nothing_here(data):
        return {}
    details: dict[str, str] = {}
    for card in require_ok(data, url).get("cards") or []:
        for item in card.get("card_group") or []:
            key = DETAIL_ITEMS.get(item.get("item_name", ""))
            content = clean_text(str(item.get("item_content") or ""))
            if item.get("card_type") == 41 and key and content:
                details.setdefault(key, content)
    return details


@page_parser
def parse_timeline(body: str | bytes | dict, url: str, now: datetime) -> TimelinePage:
    """containerid=107603<uid> or 230413<uid> -> HISTORY rows (long posts still truncated: see
    `needs_long_text`), the next since_id, and whether the list has ended."""
    data = load_json(body, url)
    if is_nothing_here(data):
        return TimelinePage(posts=[], since_id=None, end=True, needs_long_text=[])
    payload = require_ok(data, url)
    cards = [inner for card in payload.get("cards") or [] for inner in [card, *(card.get("card_group") or [])]]
    mblogs = [card["mblog"] for card in cards if card.get("card_type") == 9 and isinstance(card.get("mblog"), dict)]
    info = payload.get("cardlistInfo")
    since_id = info.get("since_id") if isinstance(info, dict) else None
    # Weibo names the next page's first post in since_id while more follow; a list info without it
    # means this is the last page. Without any list info, nothing is known: keep paging until empty.
    page = TimelinePage(posts=[], since_id=str(since_id) if since_id else None, end=not mblogs, needs_long_text=[],
                        last=isinstance(info, dict) and not since_id)
    for mblog in mblogs:
        try:
            row = _history_row(mblog, now)
            long = bool(mblog.get("isLongText")) or parse_count(mblog.get("pic_num")) > 9
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            snippet = json.dumps(mblog, ensure_ascii=False)
            page.errors.append(ParseError(url, snippet, f"mblog {mblog.get('id')}: {error}"))
            continue
        page.posts.append(row)
        if long:
            page.needs_long_text.append(row["mid"])
    return page


def _history_row(mblog: dict[str, Any], now: datetime) -> dict[str, Any]:
    rich = rich_html(mblog.get("text") or "")
    retweet = mblog.get("retweeted_status")
    return {
        "user_id": str(mblog["user"]["id"]),
        "mid": str(mblog["id"]),
        "bid": mblog.get("bid"),
        "text": rich.text,
        "topics": rich.topics,
        "at_users": rich.at_users,
        "created_at": parse_weibo_time(mblog["created_at"], now),
        "source": rich_html(mblog["source"]).text or None if mblog.get("source") else None,
        "reposts_count": parse_count(mblog.get("reposts_count")),
        "comments_count": parse_count(mblog.get("comments_count")),
        "attitudes_count": parse_count(mblog.get("attitudes_count")),
        "pics": _mblog_pics(mblog),
        "video_url": _mblog_video(mblog),
        "is_long_text": bool(mblog.get("isLongText", False)),
        "is_pinned": mblog.get("isTop") == 1 or mblog.get("mblogtype") == 2,
        "retweet_id": str(retweet["id"]) if retweet else None,
        "retweet_text": rich_html(retweet.get("text") or "").text if retweet else None,
        "retweet_user": ((retweet.get("user") or {}).get("screen_name")) if retweet else None,
    }


def _mblog_pics(mblog: dict[str, Any]) -> list[str]:
    pics = mblog.get("pics") or []
    if isinstance(pics, dict):  # some API versions key the list by position
        pics = [pics[key] for key in sorted(pics, key=int)]
    if pics:
        return [pic["large"]["url"] if pic.get("large") else large_pic(pic["url"]) for pic in pics]
    return [f"https://wx1.sinaimg.cn/large/{pid}.jpg" for pid in mblog.get("pic_ids") or []]


_VIDEO_KEYS = ("mp4_720p_mp4", "mp4_hd_mp4", "mp4_ld_mp4")


def _mblog_video(mblog: dict[str, Any]) -> str | None:
    info = mblog.get("page_info") or {}
    if info.get("type") != "video":
        return None
    stream = (info.get("media_info") or {}).get("stream_url")
    if stream:
        return stream
    urls = info.get("urls") or {}
    return next((urls[key] for key in _VIDEO_KEYS if urls.get(key)), None)


_RENDER_DATA = "$render_data"


@page_parser
def parse_long_text(body: str | bytes | dict, url: str) -> RichText:
    """Either long-text reply (the detail page or statuses/extend) -> the full text with its hashtags and
    @users: a timeline's truncated text lacks those past the cut, so take all three from here."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if isinstance(text, str) and _RENDER_DATA in text:
        return _detail_rich_text(text, url)
    return _extend_rich_text(text, url)


@page_parser
def parse_long_text_detail(html: str, url: str) -> str:
    """m.weibo.cn/detail/<mid> -> the post's full text, cleaned."""
    return _detail_rich_text(html, url).text


@page_parser
def parse_long_text_extend(body: str | bytes | dict, url: str) -> str:
    """m.weibo.cn/statuses/extend?id=<mid> -> the post's full text, cleaned."""
    return _extend_rich_text(body, url).text


def _detail_rich_text(html: str, url: str) -> RichText:
    raise_if_blocked(html, url)
    start = html.find(_RENDER_DATA)
    bracket = html.find("[", start) if start >= 0 else -1
    if bracket < 0:
        raise ParseError(url, html, "detail page without $render_data")
    try:
        render_data, _ = json.JSONDecoder().raw_decode(html, bracket)
        return rich_html(render_data[0]["status"]["text"])
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ParseError(url, html, f"detail page $render_data without status.text: {error}") from None


def _extend_rich_text(body: str | bytes | dict, url: str) -> RichText:
    payload = require_ok(load_json(body, url), url)
    content = payload.get("longTextContent")
    if not isinstance(content, str):
        raise ParseError(url, payload, "no data.longTextContent")
    return rich_html(content)


_REGION_PREFIX = "发布于"


@page_parser
def parse_region(body: str | bytes | dict, url: str) -> str | None:
    """weibo.com/ajax/statuses/show?id=<bid> -> the IP region ("北京"); None when not shown or gone."""
    data = load_json(body, url)
    if data.get("ok") != 1:
        return None
    region = clean_text(str(data.get("region_name") or ""))
    if region.startswith(_REGION_PREFIX):
        region = region[len(_REGION_PREFIX) :].strip()
    return region or None
