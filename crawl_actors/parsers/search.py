"""s.weibo.com search pages (`s.weibo.com/weibo?q=..`) -> posts.

`div.card-wrap[mid]` cards in two layouts, told apart per page: 2020-2023 (`p.from`, like count in
`<em>`) and the current one since 2023-04 (`div.from`, like count in
`a[action-type=feed_list_like] button span:nth-child(2)`). `ul.s-scroll > li` counts the pages
(Weibo shows at most 50), `a.next` links the next one, `div.card.card-no-result` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

from crawl_actors.parsers.base import ParseError, large_pic, page_parser, raise_if_blocked
from crawl_actors.parsers.text import clean_text, parse_count, parse_weibo_time, rich_text


@dataclass
class SearchPage:
    posts: list[dict[str, Any]]
    page_count: int
    next_url: str | None
    empty: bool
    errors: list[ParseError] = field(default_factory=list)  # cards that failed; the others are in posts
    layout: str = "current"  # current | 2020


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
        except (ParseError, ValueError, KeyError, IndexError, AttributeError, TypeError, RecursionError) as error:
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
    rich = rich_text(full[0] if full else parts.texts[0])
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
        "pics": [large_pic(img.attributes.get("src") or "") for img in parts.pics],
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
