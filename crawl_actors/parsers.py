"""Parsers for what Weibo serves: s.weibo.com search HTML, m.weibo.cn / weibo.com JSON, AI search JSON.

Every parser takes the body as received and the URL it came from, and either returns plain Python
values (rows whose keys are the field names of `cluster/schemas.py`) or raises:

- `Blocked` when the body says the cookie is dead or unwelcome: the Sina Visitor System page
  (`visitor_page`), `{"ok": -100, ...}` (`login_required`), the gateway's 432 page (`bot_rejected`),
  its 418/414 pages (`rate_limited`). Prefer the HTTP status where you have it; these are for bodies.
- `ParseError` when the body is not what the endpoint serves (truncated, not JSON, layout drift).
  It carries the URL and the start of the body, for the crawl's error table.

Formats (see shared WEIBO.md):

- Search `s.weibo.com/weibo?q=..`: `div.card-wrap[mid]` cards. Two layouts, told apart per page:
  2020-2023 (`p.from`, like count in `<em>`) and the current one since 2023-04 (`div.from`, like
  count in `a[action-type=feed_list_like] button span:nth-child(2)`). `ul.s-scroll > li` counts the
  pages (Weibo shows at most 50), `a.next` links the next one, `div.card.card-no-result` is empty.
- m.weibo.cn `api/container/getIndex?containerid=..`: 100505<uid> profile (`data.userInfo`),
  230283<uid>_-_INFO details (card_type 41 items), 107603<uid> / 230413<uid> timeline (card_type 9
  cards with `mblog`), `{"ok":0,"msg":"这里还没有内容"}` past the end or for an unknown user.
- Long text: m.weibo.cn/detail/<mid> (`var $render_data = [{.."status":{..}..}][0] || {};`) and
  m.weibo.cn/statuses/extend?id=<mid> (`data.longTextContent`). A timeline's text of a long post is cut,
  and so are its hashtags and @users: `parse_long_text` gives all three in full.
- weibo.com/ajax/statuses/show?id=<bid>: `region_name` ("发布于 北京").
- AI search (the local simulator's server-rendered form of ai.s.weibo.com/web/other/ai/blogs2):
  `{"ok":1,"data":{"summary":..,"has_more":..,"list":[{"username","user_id","weibo_id","content"}]}}`.

Weibo's wall-clock times are Beijing time (+08:00); every datetime returned is timezone-aware UTC.
Texts come back as `clean_text` fixed points: no zero-width or icon-font glyphs, single spaces.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

BEIJING = timezone(timedelta(hours=8))
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
# of the wrong type, a missing key. Inside a page parser all of it means "not what this endpoint serves".
_SHAPE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


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


@dataclass
class SearchPage:
    posts: list[dict[str, Any]]
    page_count: int
    next_url: str | None
    empty: bool
    errors: list[ParseError] = field(default_factory=list)  # cards that failed; the others are in posts
    layout: str = "current"  # current | 2020


@dataclass
class TimelinePage:
    posts: list[dict[str, Any]]
    since_id: str | None
    end: bool  # this page has no posts: the list ended before it
    needs_long_text: list[str]
    errors: list[ParseError] = field(default_factory=list)
    last: bool = False  # no page follows this one (cardlistInfo without a since_id)


@dataclass
class AiSearchPage:
    summary: str | None
    posts: list[dict[str, Any]]
    has_more: bool


# ---------------------------------------------------------------------------------------------
# Values: counts, times, text


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


# ---------------------------------------------------------------------------------------------
# Rich text: Weibo's HTML fragments -> plain text, hashtags, @users, place tag


@dataclass
class RichText:
    text: str
    topics: list[str]
    at_users: list[str]
    location: str | None = None


_TOPIC = re.compile(r"#[^#]+#")
_UI_LINK_TEXTS = {"全文", "收起", "收起全文", "展开", "展开全文"}
_UI_LINK_ACTIONS = {"fl_fold", "fl_unfold"}


def _rich_text(node: LexborNode) -> RichText:
    """Plain text of a post's HTML: links keep their text ('#X#', '@NAME', '网页链接'), emoji images
    become their alt/title ('[doge]'), icon-font glyphs and UI links (全文/收起/展开) go, and the place
    tag (a link with the `i.wbicon` glyph '2') leaves the text and becomes `location`."""
    out = _RichParts()
    _collect(node, out)
    return RichText(clean_text("".join(out.parts)), _unique(out.topics), _unique(out.at_users), out.location)


def _rich_html(fragment: str) -> RichText:
    root = LexborHTMLParser(f"<div>{fragment}</div>").css_first("div")
    return _rich_text(root)


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
    if _is_ui_link(link, label):
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


# ---------------------------------------------------------------------------------------------
# s.weibo.com search pages


@dataclass(frozen=True)
class _Layout:
    name: str
    from_class: str  # the block holding the time and source links: div.from (current) or p.from (2020)
    like_selector: str

    @property
    def card_selector(self) -> str:
        """Every node a card's fields come from, in one query (one query is far cheaper than ten)."""
        return (
            f"div.card-comment, {self.from_class}, p.txt, div.card-act a[action-type], div.media-piclist li img, "
            "[action-data*='video_src='], div.avator svg, div.info i.icon-vip, div.info a[nick-name]"
        )


_CURRENT = _Layout("current", "div.from", "button span:nth-child(2)")
_LAYOUT_2020 = _Layout("2020", "p.from", "em")
_SVG_BADGES = {"woo_svg_vblue": "蓝V", "woo_svg_vyellow": "黄V", "woo_svg_vorange": "红V", "woo_svg_vgold": "金V"}
# The 2020 layout marked verification with an icon class next to the name (titles 微博官方认证 / 微博个人认证).
_ICON_BADGES = {"icon-vip-b": "蓝V", "icon-vip-y": "黄V", "icon-vip-r": "红V", "icon-vip-g": "金V"}
ORDINARY_USER = "普通用户"


@page_parser
def parse_search_page(html: str, url: str, now: datetime) -> SearchPage:
    """One s.weibo.com result page; `now` is when it was served (relative times are relative to it)."""
    raise_if_blocked(html, url)
    if "</html>" not in html[-4096:].lower():
        raise ParseError(url, html, "search page ends before </html> (truncated)")
    tree = LexborHTMLParser(html)
    if tree.css_first("div.card.card-no-result") is not None:
        return SearchPage(posts=[], page_count=0, next_url=None, empty=True)
    cards = [card for card in tree.css("div.card-wrap[mid]") if card.css_first("div.card-feed div.content div.info")]
    if not cards and tree.css_first("div.m-page") is None:
        raise ParseError(url, html, "no result cards, no empty-result marker and no pager: not a search page")
    layout = _CURRENT if tree.css_first("div.card-wrap div.from") is not None else _LAYOUT_2020
    page = SearchPage(posts=[], page_count=len(tree.css("ul.s-scroll > li")), next_url=_next_url(tree, url),
                      empty=False, layout=layout.name)
    for card in cards:
        try:
            page.posts.append(_parse_card(card, layout, now))
        except (ParseError, ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
            mid = card.attributes.get("mid")
            page.errors.append(ParseError(url, card.html, f"card mid={mid}: {error}"))
    return page


def _next_url(tree: LexborHTMLParser, url: str) -> str | None:
    link = tree.css_first("a.next")
    href = link.attributes.get("href") if link is not None else None
    return urljoin(url, href) if href else None


def _parse_card(card: LexborNode, layout: _Layout, now: datetime) -> dict[str, Any]:
    parts = _card_parts(card, layout)
    if not parts.from_blocks:
        raise ValueError(f"no {layout.from_class} block")
    links = parts.from_blocks[-1].css("a")
    if not links:
        raise ValueError(f"{layout.from_class} has no time link")
    time_link, source_link = links[0], (links[1] if len(links) > 1 else None)
    uid, bid = _uid_bid(time_link.attributes.get("href") or "")
    if not parts.texts:
        raise ValueError("no p.txt")
    full = [node for node in parts.texts if node.attributes.get("node-type") == "feed_list_content_full"]
    rich = _rich_text(full[0] if full else parts.texts[0])
    return {
        "mid": card.attributes["mid"],
        "bid": bid,
        "user_id": uid,
        "screen_name": parts.user_link.attributes.get("nick-name") if parts.user_link is not None else None,
        "text": rich.text,
        "topics": rich.topics,
        "at_users": rich.at_users,
        "location": rich.location,
        "created_at": parse_weibo_time(time_link.text(), now),
        "source": (clean_text(source_link.text()) or None) if source_link is not None else None,
        **_counts(parts.actions, layout),
        "pics": [_large_pic(img.attributes.get("src") or "") for img in parts.pics],
        "video_url": parts.video_url,
        "retweet_id": _retweet_mid(parts.box) if parts.box is not None else None,
        "user_verified": parts.badge,
    }


@dataclass
class _CardParts:
    box: LexborNode | None = None  # the forwarded post of a repost; nothing inside it is the card's own
    from_blocks: list[LexborNode] = field(default_factory=list)
    texts: list[LexborNode] = field(default_factory=list)
    actions: dict[str, LexborNode] = field(default_factory=dict)
    pics: list[LexborNode] = field(default_factory=list)
    video_url: str | None = None
    badge: str = ORDINARY_USER
    user_link: LexborNode | None = None


def _card_parts(card: LexborNode, layout: _Layout) -> _CardParts:
    """Sort the nodes of the card's one combined query by what they are (document order is kept)."""
    parts = _CardParts()
    from_tag, from_class = layout.from_class.split(".")
    for node in card.css(layout.card_selector):
        tag, attributes = node.tag, node.attributes
        classes = (attributes.get("class") or "").split()
        if tag == "div" and "card-comment" in classes and parts.box is None:
            parts.box = node
        elif parts.box is not None and _within(node, parts.box):
            continue
        elif tag == from_tag and from_class in classes:
            parts.from_blocks.append(node)
        elif tag == "p" and "txt" in classes:
            parts.texts.append(node)
        elif tag == "a" and "nick-name" in attributes:
            parts.user_link = parts.user_link or node
        elif tag == "a" and attributes.get("action-type") in _COUNT_ACTIONS:
            parts.actions.setdefault(attributes["action-type"], node)
        elif "video_src=" in (attributes.get("action-data") or ""):
            parts.video_url = parts.video_url or _video_src(attributes["action-data"])
        elif tag == "img":
            parts.pics.append(node)
        elif tag == "svg" and attributes.get("id") in _SVG_BADGES:
            parts.badge = _SVG_BADGES[attributes["id"]]
        elif tag == "i":
            parts.badge = next((_ICON_BADGES[c] for c in classes if c in _ICON_BADGES), parts.badge)
    return parts


def _uid_bid(href: str) -> tuple[str, str]:
    path = href.split("?", 1)[0].split("#", 1)[0]
    path = path.split("//", 1)[1].split("/", 1)[-1] if "//" in path else path
    parts = path.strip("/").split("/")
    if len(parts) < 2 or not parts[-2].isdigit():
        raise ValueError(f"time link {href!r} is not .../<uid>/<bid>")
    return parts[-2], parts[-1]


_COUNT_ACTIONS = {"feed_list_forward": "reposts_count", "feed_list_comment": "comments_count",
                  "feed_list_like": "attitudes_count"}


def _counts(links: dict[str, LexborNode], layout: _Layout) -> dict[str, int]:
    """The three counts of the action bar."""
    counts = {}
    for action, name in _COUNT_ACTIONS.items():
        link = links.get(action)
        if link is None:
            raise ValueError(f"no a[action-type={action}]")
        if action == "feed_list_like":
            shown = link.css_first(layout.like_selector)
            counts[name] = parse_count(shown.text() if shown is not None else None)
        else:
            counts[name] = parse_count(link.text())
    return counts


_PIC_PATH = re.compile(r"^(?:https?:)?//([^/]+)/[^/]+/(.+)$")


def _large_pic(src: str) -> str:
    match = _PIC_PATH.match(src.strip())
    if match is None:
        raise ValueError(f"picture URL {src!r} is not //host/<size>/<file>")
    return f"https://{match[1]}/large/{match[2]}"


def _video_src(action_data: str) -> str | None:
    source = parse_qs(action_data).get("video_src")
    if not source or not source[0]:
        return None
    return "https:" + source[0] if source[0].startswith("//") else source[0]


def _retweet_mid(box: LexborNode) -> str:
    for node in box.css("[action-data*='mid=']"):
        mid = parse_qs(node.attributes.get("action-data") or "").get("mid")
        if mid and mid[0].isdigit():
            return mid[0]
    marked = box.css_first("[mid]")
    if marked is not None:
        return marked.attributes["mid"]
    raise ValueError("forwarded post without a mid")


def _within(node: LexborNode, box: LexborNode) -> bool:
    cursor = node
    while cursor is not None:
        if cursor.mem_id == box.mem_id:
            return True
        cursor = cursor.parent
    return False


# ---------------------------------------------------------------------------------------------
# JSON endpoints


def _load_json(body: str | bytes | dict, url: str) -> dict[str, Any]:
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


def _is_nothing_here(data: dict[str, Any]) -> bool:
    """The end-of-list / unknown-user reply; other ok=0 replies are errors worth a retry."""
    return data.get("ok") == 0 and "没有内容" in str(data.get("msg") or "这里还没有内容")


def _require_ok(data: dict[str, Any], url: str) -> dict[str, Any]:
    if data.get("ok") != 1 or not isinstance(data.get("data"), dict):
        raise ParseError(url, data, f"expected ok=1 with data, got ok={data.get('ok')!r} msg={data.get('msg')!r}")
    return data["data"]


@page_parser
def parse_profile(body: str | bytes | dict, url: str) -> dict[str, Any] | None:
    """containerid=100505<uid> -> the USERS profile fields; None for an unknown user."""
    data = _load_json(body, url)
    if _is_nothing_here(data):
        return None
    info = _require_ok(data, url).get("userInfo")
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
    data = _load_json(body, url)
    if _is_nothing_here(data):
        return {}
    details: dict[str, str] = {}
    for card in _require_ok(data, url).get("cards") or []:
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
    data = _load_json(body, url)
    if _is_nothing_here(data):
        return TimelinePage(posts=[], since_id=None, end=True, needs_long_text=[])
    payload = _require_ok(data, url)
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
    rich = _rich_html(mblog.get("text") or "")
    retweet = mblog.get("retweeted_status")
    return {
        "user_id": str(mblog["user"]["id"]),
        "mid": str(mblog["id"]),
        "bid": mblog.get("bid"),
        "text": rich.text,
        "topics": rich.topics,
        "at_users": rich.at_users,
        "created_at": parse_weibo_time(mblog["created_at"], now),
        "source": _rich_html(mblog["source"]).text or None if mblog.get("source") else None,
        "reposts_count": parse_count(mblog.get("reposts_count")),
        "comments_count": parse_count(mblog.get("comments_count")),
        "attitudes_count": parse_count(mblog.get("attitudes_count")),
        "pics": _mblog_pics(mblog),
        "video_url": _mblog_video(mblog),
        "is_long_text": bool(mblog.get("isLongText", False)),
        "is_pinned": mblog.get("isTop") == 1 or mblog.get("mblogtype") == 2,
        "retweet_id": str(retweet["id"]) if retweet else None,
        "retweet_text": _rich_html(retweet.get("text") or "").text if retweet else None,
        "retweet_user": ((retweet.get("user") or {}).get("screen_name")) if retweet else None,
    }


def _mblog_pics(mblog: dict[str, Any]) -> list[str]:
    pics = mblog.get("pics") or []
    if isinstance(pics, dict):  # some API versions key the list by position
        pics = [pics[key] for key in sorted(pics, key=int)]
    if pics:
        return [pic["large"]["url"] if pic.get("large") else _large_pic(pic["url"]) for pic in pics]
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
        return _rich_html(render_data[0]["status"]["text"])
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ParseError(url, html, f"detail page $render_data without status.text: {error}") from None


def _extend_rich_text(body: str | bytes | dict, url: str) -> RichText:
    payload = _require_ok(_load_json(body, url), url)
    content = payload.get("longTextContent")
    if not isinstance(content, str):
        raise ParseError(url, payload, "no data.longTextContent")
    return _rich_html(content)


_REGION_PREFIX = "发布于"


@page_parser
def parse_region(body: str | bytes | dict, url: str) -> str | None:
    """weibo.com/ajax/statuses/show?id=<bid> -> the IP region ("北京"); None when not shown or gone."""
    data = _load_json(body, url)
    if data.get("ok") != 1:
        return None
    region = clean_text(str(data.get("region_name") or ""))
    if region.startswith(_REGION_PREFIX):
        region = region[len(_REGION_PREFIX) :].strip()
    return region or None


@page_parser
def parse_ai_search(body: str | bytes | dict, url: str) -> AiSearchPage:
    """The AI-search JSON -> the topic's summary and the posts it cites (mid, user_id, screen_name, text)."""
    payload = _require_ok(_load_json(body, url), url)
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


def _snippet(body: str | bytes | dict | None) -> str:
    if body is None:
        return ""
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False)
    if isinstance(body, bytes):
        body = body[: SNIPPET_CHARS * 4].decode("utf-8", "replace")
    return body[:SNIPPET_CHARS]
