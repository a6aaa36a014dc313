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
    """One timeline page. Weibo names the next page one of two ways, and real responses carry either:
    `since_id` (the next page's first post; newer responses) or `page` (the next page's number, with
    `total`, and no since_id: responses saved in 2019-2021). Neither means the last page: the list
    ends at an empty page, or once `total` posts were seen."""

    posts: list[dict[str, Any]]
    since_id: str | None  # cardlistInfo.since_id, as given (checked before it goes into a URL)
    end: bool  # this page has no posts: the list ended before it
    needs_long_text: list[str]  # mids whose text is cut (isLongText)
    errors: list[ParseError] = field(default_factory=list)
    next_page: Any = None  # cardlistInfo.page, as given
    total: int | None = None  # cardlistInfo.total: how many posts the whole timeline holds
    count: int = 0  # posts on this page, broken ones included (they count towards total)
    needs_pictures: list[str] = field(default_factory=list)  # mids with pic_num > 9: the list shows 9


@dataclass
class DetailPost:
    """m.weibo.cn/detail/<mid>: the whole status, its full text and every picture."""

    rich: RichText
    pics: list[str]


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
    info = payload.get("cardlistInfo") if isinstance(payload.get("cardlistInfo"), dict) else {}
    since_id = info.get("since_id")
    total = info.get("total")
    page = TimelinePage(posts=[], since_id=str(since_id) if since_id else None, end=not mblogs, needs_long_text=[],
                        next_page=info.get("page"), total=parse_count(total) if total is not None else None,
                        count=len(mblogs))
    for mblog in mblogs:
        try:
            row = _history_row(mblog, now)
            long = bool(mblog.get("isLongText"))
            # weibo-crawler's rule: a post with more than 9 pictures lists only 9 of them here.
            more_pictures = parse_count(mblog.get("pic_num")) > max(9, len(row["pics"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            snippet = _mblog_snippet(mblog)
            page.errors.append(ParseError(url, snippet, f"mblog {str(mblog.get('id'))[:40]}: {error}"))
            continue
        page.posts.append(row)
        if long:
            page.needs_long_text.append(row["mid"])
        if more_pictures:
            page.needs_pictures.append(row["mid"])
    return page


def _mblog_snippet(mblog: dict[str, Any]) -> str:
    try:
        return json.dumps(mblog, ensure_ascii=False)
    except (ValueError, RecursionError):
        return "<an mblog nested too deep to show>"


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
def parse_detail_page(body: str | bytes, url: str) -> DetailPost:
    """m.weibo.cn/detail/<mid> -> the full text and every picture (a timeline lists at most 9)."""
    html = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    status = _detail_status(html, url)
    return DetailPost(rich=rich_html(status["text"]), pics=_mblog_pics(status))


@page_parser
def parse_long_text_detail(html: str, url: str) -> str:
    """m.weibo.cn/detail/<mid> -> the post's full text, cleaned."""
    return _detail_rich_text(html, url).text


@page_parser
def parse_long_text_extend(body: str | bytes | dict, url: str) -> str:
    """m.weibo.cn/statuses/extend?id=<mid> -> the post's full text, cleaned."""
    return _extend_rich_text(body, url).text


def _detail_rich_text(html: str, url: str) -> RichText:
    return rich_html(_detail_status(html, url)["text"])


def _detail_status(html: str, url: str) -> dict[str, Any]:
    raise_if_blocked(html, url)
    start = html.find(_RENDER_DATA)
    bracket = html.find("[", start) if start >= 0 else -1
    if bracket < 0:
        raise ParseError(url, html, "detail page without $render_data")
    try:
        render_data, _ = json.JSONDecoder().raw_decode(html, bracket)
        status = render_data[0]["status"]
        if not isinstance(status.get("text"), str):
            raise TypeError("status.text is not a string")
        return status
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as error:
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
