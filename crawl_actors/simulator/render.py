"""Renders the corpus in Weibo's formats, and says what a perfect parser can read back from them.

- Search (s.weibo.com/weibo): HTML, 10 `div.card-wrap[mid]` cards a page, in the current layout
  (`div.from`, `a[action-type=feed_list_like] button span:nth-child(2)`, `svg#woo_svg_v*` badges)
  or the 2020 one (`p.from`, `<em>` like count, `i.icon-vip-*` badges). Times are shown relative to
  the clock: '刚刚', 'N分钟前', '今天 HH:MM', '昨天 HH:MM', 'MM月DD日 HH:MM', 'YYYY年MM月DD日 HH:MM'.
  Counts: 0 shows the label (转发/评论/赞), 1e4.. shows 'X.Y万' (floored), 1e6.. shows '100万+'.
  Long posts (> 140 characters) have a 100-character `p.txt` with 展开 and a full
  `p[node-type=feed_list_content_full]` ending in a 收起 link; a place tag is a link whose
  `i.wbicon` glyph is '2'.
- m.weibo.cn JSON: profile (followers_count a string like '1.2万' from 1e4 on), details
  (card_type 41 items), timeline cards (card_type 9; text HTML with `<a href='/n/NAME'>@NAME</a>`,
  `<span class="surl-text">#X#</span>`, url-icon emoji, `<br />`, long posts cut to 100 characters
  plus ' ...' and a 全文 link), the detail page with `$render_data`, statuses/extend.
- weibo.com/ajax/statuses/show: `region_name` "发布于 <province>".
- AI search (our server-rendered form, parsed by `parsers.parse_ai_search`): `{"ok":1,"data":{"query",
  "summary","page","has_more","list":[{"username","user_id","weibo_id","mid","content","created_at"}]}}`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from html import escape
from urllib.parse import quote, urlencode

from crawl_actors.regions import province_name
from crawl_actors.simulator.corpus import (
    BEIJING,
    LIST_PICS,
    MEDIA_CARDS,
    Corpus,
    Post,
    Segment,
    User,
    preview_segments,
)

SEARCH_PAGE_SIZE = 10
MAX_SEARCH_PAGES = 50
TIMELINE_PAGE_SIZE = 10
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NOTHING_HERE = {"ok": 0, "msg": "这里还没有内容", "data": {"cards": []}}


# ---------------------------------------------------------------------------------------------
# Counts and times as Weibo shows them, and what they read back as


def wan(count: int) -> str:
    """1234 -> '1234', 15342 -> '1.5万', 1455999 -> '145.5万', 2e8 -> '2亿' (floored to one decimal)."""
    if count < 10_000:
        return str(count)
    unit, name = (100_000_000, "亿") if count >= 100_000_000 else (10_000, "万")
    tenths = count * 10 // unit
    return f"{tenths // 10}.{tenths % 10}{name}" if tenths % 10 else f"{tenths // 10}{name}"


def shown_wan(count: int) -> int:
    if count < 10_000:
        return count
    unit = 10_000_000 if count >= 100_000_000 else 1_000
    return count // unit * unit


def search_count(count: int) -> str | None:
    """The search card's count text; None means the label alone (转发, 评论, 赞)."""
    if count == 0:
        return None
    return "100万+" if count >= 1_000_000 else wan(count)


def shown_search_count(count: int) -> int:
    return min(shown_wan(count), 1_000_000)


def search_time(moment: datetime, now: datetime) -> str:
    local, local_now = moment.astimezone(BEIJING), now.astimezone(BEIJING)
    age = now - moment
    if age < timedelta(minutes=1):
        return "刚刚"
    if age < timedelta(hours=1):
        return f"{int(age.total_seconds() // 60)}分钟前"
    clock = f"{local:%H:%M}"
    if local.date() == local_now.date():
        return f"今天 {clock}"
    if local.date() == local_now.date() - timedelta(days=1):
        return f"昨天 {clock}"
    if local.year == local_now.year:
        return f"{local:%m}月{local:%d}日 {clock}"
    return f"{local:%Y}年{local:%m}月{local:%d}日 {clock}"


def mblog_time(moment: datetime) -> str:
    """'Tue Jun 08 09:35:04 +0800 2021', in English whatever the locale."""
    local = moment.astimezone(BEIJING)
    return f"{WEEKDAYS[local.weekday()]} {MONTHS[local.month - 1]} {local:%d %H:%M:%S} +0800 {local.year}"


def http_date(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    return f"{WEEKDAYS[utc.weekday()]}, {utc:%d} {MONTHS[utc.month - 1]} {utc:%Y %H:%M:%S} GMT"


# ---------------------------------------------------------------------------------------------
# Rich text


def _token(*parts: str, size: int = 8) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:size]


def _search_segment(segment: Segment, highlight: str | None) -> str:
    value = escape(segment.value, quote=False)
    if segment.kind in MEDIA_CARDS:  # as on s.weibo.com (2020 fixture): the video glyph 'L', then the label
        label = f"{value}的微博{MEDIA_CARDS[segment.kind]}"
        href = f"http://t.cn/{_token(segment.kind, segment.value)}"
        return f'<a href="{href}" target="_blank"><i class="wbicon">L</i>{label}</a>'
    if segment.kind == "topic":
        label = f'<em class="s-color-red">{value}</em>' if segment.value == highlight else value
        href = f"https://s.weibo.com/weibo?q={quote('#' + segment.value + '#')}"
        return f'<a href="{href}" target="_blank">#{label}#</a>'
    if segment.kind == "at":
        return f'<a href="//weibo.com/n/{quote(segment.value)}" target="_blank">@{value}</a>'
    if segment.kind == "emoji":
        folder, name = _token(segment.value, size=2), _token(segment.value)
        src = f"//face.t.sinajs.cn/t4/appstyle/expression/ext/normal/{folder}/{name}_org.png"
        title = escape(segment.value)
        return f'<img src="{src}" title="{title}" alt="{title}" class="face" />'
    if segment.kind == "link":
        return f'<a href="{escape(segment.url)}" target="_blank"><i class="wbicon">O</i>{value}</a>'
    if segment.kind == "newline":
        return "<br/>"
    return value


_WEB_ICON = "https://h5.sinaimg.cn/upload/2015/09/25/3/timeline_card_small_web_default.png"


_CARD_ICONS = {"video_card": "timeline_card_small_video_default.png",  # as in the detail fixture
               "live_card": "timeline_card_small_live_default.png"}  # our guess, after the video one


def _mobile_segment(segment: Segment) -> str:
    value = escape(segment.value, quote=False)
    if segment.kind in MEDIA_CARDS:
        icon = f"https://h5.sinaimg.cn/upload/2015/09/25/3/{_CARD_ICONS[segment.kind]}"
        href = f"https://video.weibo.com/show?fid=1034:{_token(segment.kind, segment.value, size=16)}"
        return (f'<a  href="{href}" data-hide=""><span class=\'url-icon\'><img style=\'width: 1rem;height: 1rem\' '
                f"src='{icon}'></span><span class=\"surl-text\">{value}的微博{MEDIA_CARDS[segment.kind]}</span></a>")
    if segment.kind == "topic":
        query = quote(quote("#" + segment.value + "#", safe=""), safe="")
        href = f"https://m.weibo.cn/search?containerid=231522type%3D1%26t%3D10%26q%3D{query}&amp;isnewpage=1"
        return f'<a  href="{href}" data-hide=""><span class="surl-text">#{value}#</span></a>'
    if segment.kind == "at":
        return f"<a href='/n/{escape(segment.value)}'>@{value}</a>"
    if segment.kind == "emoji":
        src = f"https://h5.sinaimg.cn/m/emoticon/icon/default/d_{_token(segment.value)}.png"
        image = f'<img alt="{escape(segment.value)}" src="{src}" style="width:1em; height:1em;" />'
        return f'<span class="url-icon">{image}</span>'
    if segment.kind == "link":
        url = escape(segment.url)
        icon = f"<span class='url-icon'><img style='width: 1rem;height: 1rem' src='{_WEB_ICON}'></span>"
        return f'<a data-url="{url}" href="{url}" data-hide="">{icon}<span class="surl-text">{value}</span></a>'
    if segment.kind == "newline":
        return "<br />"
    return value


def mobile_text(post: Post, full: bool) -> str:
    """The mblog `text` HTML; a long post is cut unless `full`."""
    if full or not post.is_long:
        return "".join(_mobile_segment(s) for s in post.segments)
    shown = "".join(_mobile_segment(s) for s in preview_segments(post.segments))
    return f'{shown} ...<a href="/status/{post.mid}">全文</a>'


def _search_text(segments, highlight: str | None) -> str:
    return "".join(_search_segment(s, highlight) for s in segments)


def _place_link(post: Post) -> str:
    if post.location is None:
        return ""
    href = f"https://weibo.com/p/100101B2094{_token(post.location, size=12).upper()}"
    return f' <a href="{href}" target="_blank"><i class="wbicon">2</i>{escape(post.location, quote=False)}</a>'


# ---------------------------------------------------------------------------------------------
# Search pages


def search_page_html(corpus: Corpus, mids: list[str], page: int, query_params: list[tuple[str, str]],
                     now: datetime, layout: str, highlight: str | None) -> str:
    """Page `page` (1-based) of the matching `mids` (already in search order)."""
    pages = min(MAX_SEARCH_PAGES, -(-len(mids) // SEARCH_PAGE_SIZE))
    if not mids or page > pages:
        return _document("".join(_no_result(query_params)))
    shown = mids[(page - 1) * SEARCH_PAGE_SIZE : page * SEARCH_PAGE_SIZE]
    card = _card_2020 if layout == "2020" else _card_current
    cards = "\n".join(card(corpus.posts[mid], corpus.users[corpus.posts[mid].uid], now, highlight) for mid in shown)
    return _document(f'<div id="pl_feedlist_index">\n{cards}\n{_pager(page, pages, query_params)}\n</div>')


def _document(body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="zh-cn">\n<head>\n<meta charset="utf-8">\n<title>微博搜索</title>\n</head>\n'
        f'<body>\n<div class="m-main">\n<div class="m-con-l">\n{body}\n</div>\n</div>\n</body>\n</html>\n'
    )


def _no_result(query_params: list[tuple[str, str]]) -> str:
    query = escape(dict(query_params).get("q", ""))
    return f'<div class="card card-no-result s-pt20b40">\n<p>抱歉，未找到“{query}”相关结果。</p>\n</div>'


def _page_href(query_params: list[tuple[str, str]], page: int) -> str:
    params = [(key, value) for key, value in query_params if key != "page"] + [("page", str(page))]
    return escape("/weibo?" + urlencode(params, quote_via=quote, safe=":"))


def _pager(page: int, pages: int, query_params: list[tuple[str, str]]) -> str:
    current = ' class="cur"'
    items = "\n".join(
        f'<li{current if number == page else ""}><a href="{_page_href(query_params, number)}">第{number}页</a></li>'
        for number in range(1, pages + 1)
    )
    following = f'<a href="{_page_href(query_params, page + 1)}" class="next">下一页</a>' if page < pages else ""
    return (
        '<div class="m-page">\n<div>\n<span class="list">\n'
        '<a href="javascript:void(0);" class="pagenum" action-type="feed_list_page_more">'
        f'第{page}页<i class="wbicon">c</i></a>\n'
        '<ul class="s-scroll" style="display: none;" node-type="feed_list_page_morelist" '
        f'action-type="feed_list_page_morelist">\n{items}\n</ul>\n'
        f'</span>\n{following}\n</div>\n</div>'
    )


_SVG_BADGES = {"蓝V": ("woo_svg_vblue", "微博官方认证"), "黄V": ("woo_svg_vyellow", "微博个人认证"),
               "红V": ("woo_svg_vorange", "微博个人认证"), "金V": ("woo_svg_vgold", "微博个人认证")}
_ICON_BADGES = {"蓝V": ("icon-vip-b", "微博官方认证"), "黄V": ("icon-vip-y", "微博个人认证"),
                "红V": ("icon-vip-r", "微博个人认证"), "金V": ("icon-vip-g", "微博个人认证")}
_FOLD = {"current": ("展开", "收起"), "2020": ("展开全文", "收起全文")}


def _card_current(post: Post, user: User, now: datetime, highlight: str | None) -> str:
    badge = ""
    if user.badge in _SVG_BADGES:
        svg_id, title = _SVG_BADGES[user.badge]
        badge = (f'<span title="{title}" class="woo-avatar-icon"><svg id="{svg_id}" class="woo-icon-main">'
                 f'<use xlink:href="#{svg_id}"></use></svg></span>')
    like = search_count(post.attitudes_count) or "赞"
    actions = (
        _act("feed_list_forward", f'<i class="woo-font woo-font--retweet card-act-icon"></i> '
             f'{search_count(post.reposts_count) or "转发"}'),
        _act("feed_list_comment", f'<i class="woo-font woo-font--comment card-act-icon"></i> '
             f'{search_count(post.comments_count) or "评论"}'),
        _act("feed_list_like", '<button class="woo-like-main toolbar_btn"><span class="woo-like-iconWrap">'
             '<svg class="woo-like-icon"><use xlink:href="#woo_svg_like"></use></svg></span>'
             f'<span class="woo-like-count">{like}</span></button>', f"mid={post.mid}"),
    )
    return _card(post, user, now, highlight, "current", badge_avatar=badge, badge_name="", actions=actions)


def _card_2020(post: Post, user: User, now: datetime, highlight: str | None) -> str:
    badge = ""
    if user.badge in _ICON_BADGES:
        icon, title = _ICON_BADGES[user.badge]
        badge = (f'<a href="//verified.weibo.com/verify" target="_blank" title="{title}">'
                 f'<i class="icon-vip {icon}"></i></a>')
    forward, comment = search_count(post.reposts_count), search_count(post.comments_count)
    like = search_count(post.attitudes_count) or ""
    actions = (
        _act("feed_list_favorite", "收藏"),
        _act("feed_list_forward", f" 转发 {forward}" if forward else " 转发", f"allowForward=1&mid={post.mid}"),
        _act("feed_list_comment", f"评论 {comment}" if comment else "评论"),
        _act("feed_list_like", f'<i class="icon-act icon-act-praise"></i> <em>{like}</em>', f"mid={post.mid}"),
    )
    return _card(post, user, now, highlight, "2020", badge_avatar="", badge_name=badge, actions=actions)


def _act(action: str, inner: str, data: str = "") -> str:
    data_attribute = f' action-data="{escape(data)}"' if data else ""
    return f'<li><a href="javascript:void(0);" action-type="{action}"{data_attribute}>{inner}</a></li>'


def _card(post: Post, user: User, now: datetime, highlight: str | None, layout: str, *, badge_avatar: str,
          badge_name: str, actions: tuple[str, ...]) -> str:
    name, user_href = escape(user.screen_name), f"//weibo.com/{user.uid}?refer_flag=1001030103_"
    post_href = f"//weibo.com/{user.uid}/{post.bid}?refer_flag=1001030103_"
    avatar = f"https://tvax1.sinaimg.cn/crop.0.0.180.180.50/{_token(user.uid, size=16)}.jpg"
    short, full = _texts(post, highlight, post_href, layout)
    full_block = (f'\n<p class="txt" node-type="feed_list_content_full" nick-name="{name}" style="display: none">\n'
                  f"{full}\n</p>") if full else ""
    source = ""
    if post.source:
        app = f"//app.weibo.com/t/feed/{_token(post.source, size=6)}"
        source = f'\n&nbsp;来自 <a href="{app}" rel="nofollow">{escape(post.source)}</a>'
    from_tag = "div" if layout == "current" else "p"
    action_items = "\n".join(actions)
    return f'''<div class="card-wrap" action-type="feed_list_item" mid="{post.mid}">
<div class="card">
<div class="card-feed">
<div class="avator">
<a href="{user_href}" target="_blank"><img src="{avatar}" alt=""></a>
{badge_avatar}
</div>
<div class="content" node-type="like">
<div class="info">
<div class="menu s-fr"><a href="javascript:void(0);" action-type="fl_menu"><i class="wbicon">c</i></a></div>
<div>
<a href="{user_href}" class="name" target="_blank" nick-name="{name}">{name}</a>
{badge_name}
</div>
</div>
<p class="txt" node-type="feed_list_content" nick-name="{name}">
{short} \u200b
</p>{full_block}
{_media(post, "orj360" if layout == "current" else "thumb150")}
<{from_tag} class="from">
<a href="{post_href}" target="_blank">
{search_time(post.created_at, now)}
</a>{source}
</{from_tag}>
</div>
</div>
<div class="card-act">
<ul>
{action_items}
</ul>
</div>
</div>
</div>'''


def _texts(post: Post, highlight: str | None, post_href: str, layout: str) -> tuple[str, str]:
    """The card's `p.txt` inner HTML and, for a long post, the full `p` (with its place tag and 收起 link)."""
    place = _place_link(post)
    if not post.is_long:
        return _search_text(post.segments, highlight) + place, ""
    unfold_label, fold_label = _FOLD[layout]
    unfold = (f'<a href="{post_href}" action-type="fl_unfold" target="_blank">{unfold_label}'
              '<i class="wbicon">c</i></a>')
    fold = f'<a href="javascript:void(0);" action-type="fl_fold">{fold_label}<i class="wbicon">d</i></a>'
    short = _search_text(preview_segments(post.segments), highlight) + " \u200b " + unfold
    return short, _search_text(post.segments, highlight) + place + " " + fold


def _media(post: Post, thumb: str) -> str:
    if post.pics:  # a card shows the first 9 pictures
        items = "".join(
            f'<li><img src="{pic.replace("https:", "", 1).replace("/large/", f"/{thumb}/", 1)}" '
            f'action-type="fl_pics" action-data="uid={post.uid}&amp;pic_id={_pid(pic)}"></li>'
            for pic in post.pics[:LIST_PICS]
        )
        kind = "m1" if len(post.pics) == 1 else "m3"
        return (f'<div node-type="feed_list_media_prev">\n<div class="media media-piclist" node-type="fl_pic_list" '
                f'action-data="uid={post.uid}&amp;mid={post.mid}">\n<ul class="{kind}">{items}</ul>\n</div>\n</div>')
    if post.video_url:
        source = quote(post.video_url.replace("https:", "", 1), safe="")
        data = f"type=feedvideo&amp;objectid=1034:{post.mid}&amp;keys={post.mid[-8:]}&amp;video_src={source}"
        return (f'<div node-type="feed_list_media_prev">\n<div class="media media-video-a">\n<div class="thumbnail">\n'
                f'<a href="javascript:void(0);" class="WB_video_h5" action-data="{data}" '
                'action-type="feed_list_third_rend"><i class="icon-media icon-play-b"></i></a>\n'
                '</div>\n</div>\n</div>')
    return ""


def _pid(pic: str) -> str:
    return pic.rsplit("/", 1)[1].split(".")[0]


# ---------------------------------------------------------------------------------------------
# m.weibo.cn JSON


def _avatar(user: User) -> str:
    return f"https://tvax1.sinaimg.cn/crop.0.0.180.180.180/{_token(user.uid, size=16)}.jpg"


def _user_brief(user: User) -> dict:
    brief = {
        "id": int(user.uid), "screen_name": user.screen_name, "profile_image_url": _avatar(user),
        "profile_url": f"https://m.weibo.cn/u/{user.uid}?uid={user.uid}&luicode=10000011",
        "statuses_count": user.statuses_count, "verified": user.verified, "verified_type": user.verified_type,
    }
    if user.verified:
        brief["verified_reason"] = user.verified_reason
    brief.update({"description": user.description or "", "gender": user.gender, "mbtype": 0, "urank": user.urank,
                  "mbrank": user.mbrank, "follow_me": False, "following": False,
                  "followers_count": user.followers_count, "follow_count": user.follow_count})
    return brief


def profile_json(user: User) -> dict:
    info = _user_brief(user)
    if user.followers_count >= 10_000:  # Weibo sends big counts as display strings
        info["followers_count"] = wan(user.followers_count)
        info["followers_count_str"] = wan(user.followers_count)
    cover = f"https://wx4.sinaimg.cn/crop.0.0.640.640.640/{_token(user.uid, 'cover', size=32)}.jpg"
    info.update({"cover_image_phone": cover, "avatar_hd": _avatar(user).replace(".180/", ".1024/"), "like": False,
                 "like_me": False})
    tabs = [
        {"id": 1, "tabKey": "profile", "must_show": 1, "hidden": 0, "title": "精选", "tab_type": "profile",
         "containerid": f"230283{user.uid}"},
        {"id": 2, "tabKey": "weibo", "must_show": 1, "hidden": 0, "title": "微博", "tab_type": "weibo",
         "containerid": f"107603{user.uid}", "apipath": "/profile/statuses", "url": "/index/my"},
    ]
    return {"ok": 1, "data": {"isVideoCoverStyle": 1, "isStarStyle": 0, "userInfo": info,
                              "tabsInfo": {"selectedTab": 1, "tabs": tabs}, "profile_ext": f"touid:{user.uid}",
                              "scheme": f"sinaweibo://userinfo?uid={user.uid}", "showAppTips": 0}}


_DETAIL_GROUPS = (
    (("所在地", "location"), ("生日", "birthday")),
    (("注册时间", "registered"), ("阳光信用", "sunshine_credit"), ("IP属地", "ip_region")),
    (("大学", "education"),),
    (("公司", "company"),),
)


def details_json(user: User) -> dict:
    basics = [{"card_type": 41, "item_name": "昵称", "item_content": user.screen_name},
              {"card_type": 41, "item_name": "性别", "item_content": "女" if user.gender == "f" else "男"}]
    if user.description:
        basics.append({"card_type": 41, "item_name": "简介", "item_content": user.description})
    cards = []
    for index, group in enumerate(_DETAIL_GROUPS):
        items = [{"card_type": 41, "item_name": label, "item_content": user.details[key]}
                 for label, key in group if key in user.details]
        if index == 0:
            items = basics + items
        if index == 1:
            items.append({"card_type": 42, "item_name": "等级", "item_content": f"Lv{user.urank}"})
        if items:
            cards.append({"card_type": 11, "show_type": 0, "card_group": items})
    info = {"containerid": f"230283{user.uid}_-_INFO", "v_p": 42, "show_style": 1, "title_top": "基本资料"}
    return {"ok": 1, "data": {"cardlistInfo": info, "cards": cards, "showAppTips": 0}}


def mblog_json(corpus: Corpus, post: Post, *, full_text: bool = False) -> dict:
    """The mblog as a list shows it (text cut when long, at most 9 pictures of `pic_num`); `full_text`:
    as the detail page shows it, whole, with every picture."""
    user = corpus.users[post.uid]
    pics = post.pics if full_text else post.pics[:LIST_PICS]
    mblog = {
        "visible": {"type": 0, "list_id": 0}, "created_at": mblog_time(post.created_at),
        "id": post.mid, "mid": post.mid, "can_edit": False, "show_additional_indication": 0,
        "text": mobile_text(post, full=full_text), "textLength": len(post.text.encode("gbk", "replace")),
        "source": post.source or "", "favorited": False,
        "pic_ids": [_pid(pic) for pic in pics], "pic_types": "",
        "is_paid": False, "mblog_vip_type": 0, "user": _user_brief(user),
        "reposts_count": post.reposts_count, "comments_count": post.comments_count,
        "attitudes_count": post.attitudes_count, "pending_approval_count": 0, "isLongText": post.is_long,
        "mlevel": 0, "darwin_tags": [], "mblogtype": 2 if post.is_pinned else 0, "pic_num": len(post.pics),
    }
    if post.is_pinned:
        mblog["isTop"] = 1
    if pics:
        mblog["thumbnail_pic"] = pics[0].replace("/large/", "/thumbnail/")
        mblog["pics"] = [_pic_json(pic) for pic in pics]
    if post.video_url:
        mblog["page_info"] = _video_json(post)
    if post.retweet_of:
        mblog["retweeted_status"] = mblog_json(corpus, corpus.posts[post.retweet_of])
        mblog["repost_type"] = 1
    mblog["bid"] = post.bid
    return mblog


def _pic_json(pic: str) -> dict:
    return {"pid": _pid(pic), "url": pic.replace("/large/", "/orj360/"), "size": "orj360",
            "geo": {"width": 360, "height": 360, "croped": False},
            "large": {"size": "large", "url": pic, "geo": {"width": "1080", "height": "1080", "croped": False}}}


def _video_json(post: Post) -> dict:
    url = post.video_url or ""
    return {"type": "video", "object_type": 11, "page_title": "微博视频", "title": "微博视频",
            "object_id": f"1034:{post.mid}", "play_count": "1万次播放",
            "media_info": {"stream_url": url, "stream_url_hd": url.replace("mp4_ld", "mp4_hd"), "duration": 60.0},
            "urls": {"mp4_hd_mp4": url.replace("mp4_ld", "mp4_hd"), "mp4_ld_mp4": url}}


def timeline_json(corpus: Corpus, uid: str, containerid: str, start: int, paging: str, page: int) -> dict:
    """The timeline cards from index `start`, and how to ask for the next page, one of Weibo's two ways:
    'since_id' (newer responses): cardlistInfo.since_id, the next card's mid, only while more follow;
    'page' (responses saved 2019-2021, e.g. nonebot-bison's weibo_ys_list_0.json): cardlistInfo.page,
    the next page's number, on every page including the last, and no since_id: only `total` (or an
    empty page) says where the list ends."""
    mids = corpus.timelines[uid]
    shown = mids[start : start + TIMELINE_PAGE_SIZE]
    cards = [{"card_type": 9, "itemid": f"{containerid}_-_{mid}",
              "scheme": f"https://m.weibo.cn/status/{corpus.posts[mid].bid}?mblogid={corpus.posts[mid].bid}",
              "mblog": mblog_json(corpus, corpus.posts[mid])} for mid in shown]
    if start == 0:
        cards.insert(0, {"card_type": 58, "show_type": 0, "desc": f"全部微博（{len(mids)}）"})
    info: dict = {"containerid": containerid, "v_p": 42, "show_style": 1, "total": len(mids)}
    following = start + TIMELINE_PAGE_SIZE
    if paging == "page":
        info["page"] = page + 1
    elif following < len(mids):
        info["since_id"] = int(mids[following])
    return {"ok": 1, "data": {"cardlistInfo": info, "cards": cards,
                              "scheme": f"sinaweibo://cardlist?containerid={containerid}", "showAppTips": 0}}


def detail_html(corpus: Corpus, post: Post) -> str:
    status = mblog_json(corpus, post, full_text=True)
    status.update({"status_title": post.text[:20], "ok": 1})
    render_data = [{"appScheme": f"https://m.weibo.cn?luicode=20000061&lfid={post.mid}", "callUinversalLink": False,
                    "callWeibo": False, "schemeOrigin": False, "status": status, "call": 1}]
    data = json.dumps(render_data, ensure_ascii=False, indent=4)
    return f'''<!DOCTYPE html>
<html lang="zh-cn">
<head>
    <meta charset="utf-8">
    <title>微博</title>
</head>
<body>
<div id="app"></div>
<script>
    var config = {{
      env: 'prod',
      login: [][0],
      uid: '',
      pageConfig: [null][0] || {{}},
      wm: ''
    }}
  var $render_data = {data}[0] || {{}};
</script>
</body>
</html>
'''


def extend_json(post: Post) -> dict:
    html = "".join(_mobile_segment(s) for s in post.segments)
    return {"ok": 1, "data": {"ok": 1, "longTextContent": html, "reposts_count": post.reposts_count,
                              "comments_count": post.comments_count, "attitudes_count": post.attitudes_count}}


# ---------------------------------------------------------------------------------------------
# weibo.com ajax, AI search, blocks


def region_json(corpus: Corpus, post: Post) -> dict:
    user = corpus.users[post.uid]
    return {"ok": 1, "idstr": post.mid, "mid": post.mid, "mblogid": post.bid, "created_at": mblog_time(post.created_at),
            "text_raw": post.text, "user": {"id": int(user.uid), "idstr": user.uid, "screen_name": user.screen_name},
            "reposts_count": post.reposts_count, "comments_count": post.comments_count,
            "attitudes_count": post.attitudes_count, "region_name": f"发布于 {province_name(post.province)}"}


def ai_search_json(corpus: Corpus, query: str, summary: str | None, mids: list[str], page: int,
                   has_more: bool) -> dict:
    items = []
    for mid in mids:
        post = corpus.posts[mid]
        user = corpus.users[post.uid]
        items.append({"username": user.screen_name, "user_id": user.uid, "weibo_id": post.mid, "mid": post.mid,
                      "content": post.text, "created_at": mblog_time(post.created_at)})
    return {"ok": 1, "data": {"query": query, "summary": summary, "page": page, "has_more": has_more, "list": items}}


def login_required_json(return_url: str) -> dict:
    return {"ok": -100, "url": f"https://passport.weibo.cn/signin/login?entry=mweibo&r={quote(return_url, safe='')}"}


def gateway_html(status: int) -> str:
    """The bare gateway page Weibo answers with for 432 (bot), 418 (too fast) and 414 (far too fast)."""
    return (f"<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n"
            "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def visitor_html(return_url: str) -> str:
    """The Sina Visitor System page a request without a valid cookie is sent to (our own minimal copy)."""
    target = json.dumps(return_url)
    return f'''<!DOCTYPE html>
<html>
<head>
    <meta http-equiv="Content-type" content="text/html; charset=utf-8"/>
    <title>Sina Visitor System</title>
</head>
<body>
<span id="message"></span>
<script type="text/javascript">
    var return_url = {target};
    function incarnate(tid) {{
        var body = "cb=visitor_gray_callback&tid=" + encodeURIComponent(tid) + "&from=weibo";
        var request = new XMLHttpRequest();
        request.open("POST", "https://" + window.location.host + "/visitor/genvisitor2");
        request.send(body);
    }}
    function error_back() {{
        var login = "https://passport.weibo.com/sso/v2/login?entry=miniblog&url=";
        window.location.replace(login + encodeURIComponent(return_url));
    }}
    window.setTimeout(error_back, 5000);
</script>
</body>
</html>
'''
