"""Weibo's values as shown -> plain Python: counts ('1.5万'), times ('5分钟前', '昨天 20:07', ...),
text without icon glyphs, and rich text (a post's HTML -> its text, hashtags, @users and place tag).

Weibo's wall-clock times are Beijing time (+08:00); every datetime returned is timezone-aware UTC.
Texts come back as `clean_text` fixed points: no zero-width or icon-font glyphs, single spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from selectolax.lexbor import LexborHTMLParser, LexborNode

BEIJING = timezone(timedelta(hours=8))

_COUNT_UNITS = {None: 1, "万": 10_000, "亿": 100_000_000}
_COUNT = re.compile(r"(\d+(?:\.\d+)?)(万|亿)?\+?")
_COUNT_LABELS = ("转发", "评论", "点赞", "赞", "收藏")


def parse_count(text: str | int | None) -> int:
    """'1.5万' -> 15000, '100万+' -> 1000000, '转发 12' -> 12, '转发'/''/None -> 0, ints pass through."""
    if text is None:
        return 0
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    shown = str(text).strip()
    if shown.isdigit():  # the common case, kept cheap: a search page holds three counts per card
        return int(shown)
    if not shown or shown in _COUNT_LABELS:
        return 0
    compact = re.sub(r"[\s,，]", "", shown)
    for label in _COUNT_LABELS:
        if compact.startswith(label):
            compact = compact[len(label) :]
            break
    if not compact:
        return 0
    match = _COUNT.fullmatch(compact)
    if match is None:
        raise ValueError(f"not a Weibo count: {text!r}")
    return int(Decimal(match[1]) * _COUNT_UNITS[match[2]])  # Decimal: '145.5万' is exactly 1455000


_RELATIVE = re.compile(r"(\d+)\s*(秒|分钟|小时)前")
_DAY_CLOCK = re.compile(r"(今天|昨天)\s*(\d{1,2}):(\d{2})")
_MONTH_DAY_CLOCK = re.compile(r"(?:(\d{4})年)?(\d{1,2})月(\d{1,2})日\s*(\d{1,2}):(\d{2})")
_SHORT_DATE = re.compile(r"(?:(\d{4})-)?(\d{1,2})-(\d{1,2})")
_FULL = re.compile(r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) (\d{1,2}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2}) (\d{4})")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_UNITS = {"秒": "seconds", "分钟": "minutes", "小时": "hours"}


def parse_weibo_time(text: str, now: datetime) -> datetime:
    """A Weibo time as shown (relative, 今天/昨天, 月日, 年月日, m.weibo.cn short or full form) -> UTC.

    `now` is the moment the page was served (use the response's Date header); a naive `now` is UTC.
    Forms without a year take the year of `now` in Beijing, or the year before if that is in the future.
    """
    shown = " ".join(str(text).split())
    now_utc = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
    local_now = now_utc.astimezone(BEIJING)
    try:
        moment = _parse_shown_time(shown, now_utc, local_now)
    except ValueError as error:
        raise ValueError(f"unrecognised Weibo time {text!r}: {error}") from error
    if moment is None:
        raise ValueError(f"unrecognised Weibo time {text!r}")
    return moment.astimezone(timezone.utc)


def _parse_shown_time(shown: str, now_utc: datetime, local_now: datetime) -> datetime | None:
    if shown == "刚刚":
        return now_utc
    if match := _RELATIVE.fullmatch(shown):
        return now_utc - timedelta(**{_UNITS[match[2]]: int(match[1])})
    if match := _DAY_CLOCK.fullmatch(shown):
        day = local_now.date() - timedelta(days=1 if match[1] == "昨天" else 0)
        return datetime(day.year, day.month, day.day, int(match[2]), int(match[3]), tzinfo=BEIJING)
    if match := _MONTH_DAY_CLOCK.fullmatch(shown):
        year, month, day, hour, minute = match.groups()
        return _dated(year, int(month), int(day), int(hour), int(minute), local_now)
    if match := _SHORT_DATE.fullmatch(shown):
        year, month, day = match.groups()
        return _dated(year, int(month), int(day), 0, 0, local_now)
    if match := _FULL.fullmatch(shown):
        month, day, hour, minute, second, sign, off_h, off_m, year = match.groups()
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
        return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
                        tzinfo=timezone(offset))
    return None


def _dated(year: str | None, month: int, day: int, hour: int, minute: int, local_now: datetime) -> datetime:
    if year is not None:
        return datetime(int(year), month, day, hour, minute, tzinfo=BEIJING)
    moment = datetime(local_now.year, month, day, hour, minute, tzinfo=BEIJING)
    return moment if moment <= local_now else moment.replace(year=local_now.year - 1)


# Zero-width characters and the private-use area, where Weibo's icon fonts put their glyphs.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\ue000-\uf8ff]")


def clean_text(text: str) -> str:
    """Drop zero-width and icon glyphs, collapse every whitespace run to one space, strip the ends."""
    return " ".join(_INVISIBLE.sub("", text).split())


@dataclass
class RichText:
    text: str
    topics: list[str]
    at_users: list[str]
    location: str | None = None


_TOPIC = re.compile(r"#[^#]+#")
_UI_LINK_TEXTS = {"全文", "收起", "收起全文", "展开", "展开全文"}
_UI_LINK_ACTIONS = {"fl_fold", "fl_unfold"}


def rich_text(node: LexborNode) -> RichText:
    """Plain text of a post's HTML: links keep their text ('#X#', '@NAME', '网页链接'), emoji images
    become their alt/title ('[doge]'), icon-font glyphs and UI links (全文/收起/展开) go, and the place
    tag (a link with the `i.wbicon` glyph '2') leaves the text and becomes `location`."""
    out = _RichParts()
    _collect(node, out)
    return RichText(clean_text("".join(out.parts)), _unique(out.topics), _unique(out.at_users), out.location)


def rich_html(fragment: str) -> RichText:
    root = LexborHTMLParser(f"<div>{fragment}</div>").css_first("div")
    return rich_text(root)


@dataclass
class _RichParts:
    parts: list[str] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)
    at_users: list[str] = field(default_factory=list)
    location: str | None = None


def _collect(node: LexborNode, out: _RichParts) -> None:
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag == "-text":
            out.parts.append(child.text_content or "")
        elif tag == "br":
            out.parts.append(" ")
        elif tag == "img":
            out.parts.append(child.attributes.get("alt") or child.attributes.get("title") or "")
        elif tag == "a":
            _collect_link(child, out)
        elif tag in ("script", "style", "-comment", "_comment") or _is_icon(child):
            continue
        else:
            _collect(child, out)


def _collect_link(link: LexborNode, out: _RichParts) -> None:
    inner = _RichParts()
    if _text_only(link):  # most links (#topic#, @user) hold one text node: no walk needed
        inner.parts.append(link.text(deep=False) or "")
    else:
        _collect(link, inner)
    label = clean_text("".join(inner.parts))
    if _is_ui_link(link, label) or _is_media_card(link, label):
        return
    if _is_place_link(link):
        out.location = label or None
        return
    href = link.attributes.get("href") or ""
    if _TOPIC.fullmatch(label):
        out.topics.append(label[1:-1])
    elif label.startswith("@") and "/n/" in href:
        out.at_users.append(label[1:])
    out.parts.extend(inner.parts)


# A video or live card is a link Weibo appends to the text: '<a ...><i class="wbicon">L</i>NAME的微博视频</a>'
# on s.weibo.com, '<a ...><span class="url-icon"><img src=".../timeline_card_small_video_default.png"></span>
# <span class="surl-text">NAME的微博视频</span></a>' on m.weibo.cn (fixtures: the 2020 search page, the
# detail page). It is markup, not what the user wrote: the link goes, the text around it stays.
_MEDIA_LABEL = re.compile(r"的(?:微博|秒拍)(?:视频|直播)$")
_MEDIA_ICONS = ("timeline_card_small_video", "timeline_card_small_live")
_MEDIA_GLYPH = "L"


def _is_media_card(link: LexborNode, label: str) -> bool:
    if _text_only(link):
        return False  # a card always carries its icon
    icon = _card_icon(link)
    if icon is None:
        return False
    return icon == _MEDIA_GLYPH or any(name in icon for name in _MEDIA_ICONS) or bool(_MEDIA_LABEL.search(label))


def _card_icon(link: LexborNode) -> str | None:
    """The glyph of a link's `i.wbicon`, or the image source inside its `span.url-icon`; None without an icon."""
    for node in link.iter():
        if _is_icon(node):
            return (node.text() or "").strip()
        if node.tag == "span" and "url-icon" in (node.attributes.get("class") or "").split():
            image = node.css_first("img")
            return (image.attributes.get("src") or "") if image is not None else ""
    return None


def _text_only(node: LexborNode) -> bool:
    child = node.child
    return child is not None and child.tag == "-text" and child.next is None


def _is_icon(node: LexborNode) -> bool:
    return node.tag == "i" and "wbicon" in (node.attributes.get("class") or "").split()


def _is_place_link(link: LexborNode) -> bool:
    if _text_only(link):
        return False
    return any(node.tag == "i" and _is_icon(node) and (node.text() or "").strip() == "2" for node in link.iter())


def _is_ui_link(link: LexborNode, label: str) -> bool:
    if link.attributes.get("action-type") in _UI_LINK_ACTIONS:
        return True
    href = link.attributes.get("href") or ""
    return label in _UI_LINK_TEXTS and (href.startswith("javascript") or "/status/" in href)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
