"""The parsers against real saved Weibo responses (shared/fixtures/weibo) and hand-made edge cases."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawl_actors import parsers
from crawl_actors.parsers import Blocked, ParseError

BEIJING = timezone(timedelta(hours=8))
REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("SOCIALALIGN_WEIBO_FIXTURES") or REPO.parent / "shared" / "fixtures" / "weibo")
SEARCH_URL = "https://s.weibo.com/weibo?q=%E5%9C%A8%E7%BA%BF%E6%95%99%E8%82%B2&xsort=hot&page=1"
SAVED_2020 = datetime(2020, 7, 8, tzinfo=timezone.utc)  # when the 2020 search page was saved
SAVED_2021 = datetime(2021, 6, 17, 12, 0, tzinfo=timezone.utc)


def fixture(name: str) -> str:
    if not FIXTURES.is_dir():
        pytest.skip(f"Weibo fixtures not found at {FIXTURES} (set SOCIALALIGN_WEIBO_FIXTURES)")
    return (FIXTURES / name).read_text(encoding="utf-8")


def _parse_any(path: Path) -> object:
    body = path.read_text(encoding="utf-8")
    url = f"https://example.invalid/{path.name}"
    name = path.name
    if name.startswith("s_weibo_com_search"):
        return parsers.parse_search_page(body, url, SAVED_2020)
    if name.startswith("m_weibo_cn_getIndex_100505"):
        return parsers.parse_profile(body, url)
    if name.startswith("m_weibo_cn_getIndex_107603"):
        return parsers.parse_timeline(body, url, SAVED_2021)
    if name.startswith("m_weibo_cn_detail"):
        return parsers.parse_long_text_detail(body, url)
    if name.startswith("m_weibo_cn_statuses_extend"):
        return parsers.parse_long_text_extend(body, url)
    if name.startswith("passport_weibo_com_visitor"):
        with pytest.raises(Blocked) as blocked:
            parsers.parse_search_page(body, url, SAVED_2020)
        return blocked.value
    raise AssertionError(f"no parser is known for fixture {name}: add it to this test")


def test_every_fixture_file_parses() -> None:
    fixture("SOURCES.txt")
    files = sorted(path for path in FIXTURES.iterdir() if path.name != "SOURCES.txt")
    assert len(files) >= 6
    for path in files:
        assert _parse_any(path) is not None, path.name


# ---------------------------------------------------------------------------------------------
# m.weibo.cn fixtures


def test_profile_fixture() -> None:
    user = parsers.parse_profile(fixture("m_weibo_cn_getIndex_100505_profile.json"), "u")
    assert user == {
        "user_id": "6279793937", "screen_name": "明日方舟Arknights", "gender": "f",
        "description": "《明日方舟》官方微博，欢迎咨询客服QQ服务号：800830064",
        "statuses_count": 1553, "followers_count": 1_455_000, "follow_count": 34, "verified": True,
        "verified_type": 2, "verified_reason": "上海鹰角网络科技有限公司", "urank": 4, "mbrank": 7,
    }


def test_timeline_fixture() -> None:
    page = parsers.parse_timeline(fixture("m_weibo_cn_getIndex_107603_timeline_page.json"), "u", SAVED_2021)
    posts = {post["mid"]: post for post in page.posts}
    assert len(page.posts) == 10 and not page.errors and not page.end
    assert page.since_id == "4646131823281332" and page.total == 1221 and page.count == 10
    assert page.next_page is None and page.needs_pictures == []
    assert page.needs_long_text == ["4645748019299849", "4649031014551911", "4647212359090479",
                                    "4646569834450357", "4646502071534367", "4646192191903210"]
    pinned = page.posts[0]
    assert pinned["mid"] == "4645748019299849" and pinned["is_pinned"] and pinned["is_long_text"]
    assert [post["mid"] for post in page.posts if post["is_pinned"]] == ["4645748019299849"]
    assert pinned["created_at"] == datetime(2021, 6, 8, 9, 35, 4, tzinfo=BEIJING)
    assert pinned["topics"] == ["明日方舟", "音律联觉"] and pinned["bid"] == "Kjc77D1jz"
    assert pinned["video_url"].startswith("https://f.video.weibocdn.com/0041nQjugx07Ni6Zk3Qk01041200iTHD0E010.mp4")
    assert pinned["user_id"] == "6279793937" and pinned["source"] == "微博视频号"
    repost = posts["4648806186747944"]
    assert repost["retweet_id"] == "4645748019299849" and repost["retweet_user"] == "明日方舟Arknights"
    assert repost["retweet_text"].startswith("#明日方舟# #音律联觉# 2021明日方舟音律联觉")
    assert repost["at_users"] == ["黄防护服黄", "微博抽奖平台"] and repost["topics"] == []
    assert repost["text"].startswith("恭喜@黄防护服黄 等10名用户") and "高级版" in repost["text"]
    assert (repost["reposts_count"], repost["comments_count"], repost["attitudes_count"]) == (7, 147, 1340)
    assert len(posts["4646917039199914"]["pics"]) == 4
    assert posts["4649031014551911"]["pics"] == ["https://wx1.sinaimg.cn/large/006QZngZgy1grl2q3n98jj30rs2084qp.jpg"]
    assert all("全文" not in post["text"] and "<" not in post["text"] for post in page.posts)


def test_long_text_detail_and_extend_agree() -> None:
    html = fixture("m_weibo_cn_detail_4645748019299849.html")
    detail = parsers.parse_long_text_detail(html, "u")
    extend = parsers.parse_long_text_extend(fixture("m_weibo_cn_statuses_extend_4645748019299849.json"), "u")
    assert detail == extend
    rich = parsers.parse_long_text(html, "u")
    assert rich == parsers.parse_long_text(fixture("m_weibo_cn_statuses_extend_4645748019299849.json"), "u")
    assert rich.text == detail and rich.topics == ["明日方舟", "音律联觉"] and rich.at_users == ["微博抽奖平台"]
    raw = json.loads(html[html.index("[", html.index("$render_data")) : html.rindex("[0] || {};")])
    assert len(raw[0]["status"]["text"]) == 1845  # the HTML; the plain text is much shorter
    assert 350 < len(detail) < 1845
    assert "3. 灯华梦踏 4. 前航远歌" in detail and "通过@微博抽奖平台 抽取十位博士" in detail
    # The video card the post ends with ('<a ...><span class="url-icon"><img src=".../timeline_card_small_
    # video_default.png"></span><span class="surl-text">明日方舟Arknights的微博视频</span></a>') is markup: gone.
    assert detail.endswith("开奖后奖品会在出货后寄出。 抽奖详情") and "全文" not in detail
    assert "的微博视频" not in detail and "微博视频" in raw[0]["status"]["text"]


def test_detail_page_fixture_gives_the_whole_status() -> None:
    html = fixture("m_weibo_cn_detail_4645748019299849.html")
    detail = parsers.parse_detail_page(html, "u")
    assert detail.rich == parsers.parse_long_text(html, "u") and detail.pics == []  # this post has no pictures
    status = json.loads(html[html.index("[", html.index("$render_data")) : html.rindex("[0] || {};")])[0]["status"]
    status.update(pic_num=12, pics=[{"url": f"https://wx1.sinaimg.cn/orj360/p{i}.jpg"} for i in range(12)])
    page = html.replace(html[html.index("[", html.index("$render_data")) : html.rindex("[0] || {};")],
                        json.dumps([{"status": status, "call": 1}], ensure_ascii=False))
    assert parsers.parse_detail_page(page, "u").pics == [f"https://wx1.sinaimg.cn/large/p{i}.jpg" for i in range(12)]


# ---------------------------------------------------------------------------------------------
# s.weibo.com fixtures


@pytest.fixture(scope="module")
def page_2020() -> parsers.SearchPage:
    return parsers.parse_search_page(fixture("s_weibo_com_search_page_2020.html"), SEARCH_URL, SAVED_2020)


def test_search_page_2020_layout(page_2020: parsers.SearchPage) -> None:
    assert page_2020.layout == "2020" and not page_2020.empty and not page_2020.errors
    assert len(page_2020.posts) == 20
    assert page_2020.page_count == 35  # the saved ul.s-scroll lists pages 1..35
    assert page_2020.next_url.startswith("https://s.weibo.com/weibo/%25E5%259C%25A8")
    assert page_2020.next_url.endswith("&Refer=g&page=2")
    first = page_2020.posts[0]
    assert set(first) == {
        "mid", "bid", "user_id", "screen_name", "text", "topics", "at_users", "location", "created_at", "source",
        "reposts_count", "comments_count", "attitudes_count", "pics", "video_url", "retweet_id", "user_verified"}
    assert (first["mid"], first["bid"], first["user_id"], first["screen_name"]) == (
        "4497642253759082", "IEY7vfLUm", "2286908003", "人民网")
    assert first["created_at"] == datetime(2020, 4, 25, 16, 55, tzinfo=BEIJING)
    assert (first["reposts_count"], first["comments_count"], first["attitudes_count"]) == (1261, 1891, 40975)
    assert first["source"] == "人民网微博" and first["user_verified"] == "蓝V" and first["retweet_id"] is None
    assert first["topics"] == ["初三化学老师回应带猫上课", "化学老师上课是为了炫耀猫"]
    assert first["at_users"] == ["封面新闻"]
    assert "上课时碰巧猫进来了[喵喵]】" in first["text"] and first["text"].endswith("被迫营业喵喵！ @封面新闻")
    assert first["video_url"].startswith("https://f.video.weibocdn.com/003unWKIgx07CM27nAOr01041200avWz0E010.mp4?")


def test_search_page_2020_long_card_and_pictures(page_2020: parsers.SearchPage) -> None:
    posts = {post["mid"]: post for post in page_2020.posts}
    long_card = posts["4499373432859508"]
    assert long_card["screen_name"] == "王尼玛" and long_card["user_verified"] == "金V"
    assert "也有人性的体量和细心！ 时间较长建议先马后看！[爱你] #暴走小事件#" in long_card["text"]
    assert long_card["text"].endswith("[爱你] #暴走小事件#") and "收起" not in long_card["text"]
    news = posts["4498611981467363"]
    assert news["text"].endswith("④我国在线教育用户规模达4.23亿。（总台央视记者张岗）")
    assert news["pics"] == ["https://ww4.sinaimg.cn/large/9e5389bbly1ge993yy6p1j20m80m8wkb.jpg"]
    assert news["topics"] == ["我国在线教育用户规模达4.23亿", "我国网民规模9.04亿"]
    assert sum(post["user_verified"] == "普通用户" for post in page_2020.posts) == 2
    assert all("\u200b" not in post["text"] and "  " not in post["text"] for post in page_2020.posts)


def test_visitor_page_is_blocked() -> None:
    html = fixture("passport_weibo_com_visitor_system.html")
    assert parsers.is_visitor_page(html)
    with pytest.raises(Blocked) as blocked:
        parsers.parse_search_page(html, "https://s.weibo.com/weibo?q=x", SAVED_2020)
    assert blocked.value.reason == "visitor_page" and blocked.value.url == "https://s.weibo.com/weibo?q=x"
    with pytest.raises(Blocked):
        parsers.parse_profile(html, "u")


def test_one_broken_card_does_not_lose_the_others() -> None:
    html = fixture("s_weibo_com_search_page_2020.html")
    broken = html.replace('<p class="from" >', '<p class="gone" >', 1)
    page = parsers.parse_search_page(broken, SEARCH_URL, SAVED_2020)
    assert len(page.posts) == 19 and len(page.errors) == 1
    error = page.errors[0]
    assert error.url == SEARCH_URL and "4497642253759082" in str(error) and error.snippet


def test_truncated_or_foreign_search_pages_raise_parse_error() -> None:
    html = fixture("s_weibo_com_search_page_2020.html")
    with pytest.raises(ParseError) as truncated:
        parsers.parse_search_page(html[: len(html) // 2], SEARCH_URL, SAVED_2020)
    assert truncated.value.url == SEARCH_URL and truncated.value.snippet == html[:200]
    with pytest.raises(ParseError, match="not a search page"):
        parsers.parse_search_page("<html><body><p>系统繁忙</p></body></html>", SEARCH_URL, SAVED_2020)


# ---------------------------------------------------------------------------------------------
# The current search layout, hand-made


CURRENT_CARD = """<div class="card-wrap" action-type="feed_list_item" mid="{mid}"><div class="card"><div class="card-feed">
<div class="avator"><a href="//weibo.com/123?refer_flag=1"><img src="x.jpg"></a>{badge}</div>
<div class="content"><div class="info"><div class="menu s-fr"></div><div>
<a href="//weibo.com/123?refer_flag=1" class="name" nick-name="小明">小明</a></div></div>
<p class="txt" node-type="feed_list_content" nick-name="小明">\u200b#短# 开头 <a href="javascript:void(0);" action-type="fl_unfold">展开<i class="wbicon">c</i></a></p>
<p class="txt" node-type="feed_list_content_full" nick-name="小明" style="display: none">
<a href="https://s.weibo.com/weibo?q=%23AI%23">#<em class="s-color-red">AI</em>#</a> 真好<img class="face" title="[doge]" alt="[doge]" src="d.png"/>
<br/>第二行 <a href="//weibo.com/n/%E5%B0%8F%E7%BA%A2">@小红</a> <a href="https://s.weibo.com/weibo?q=%23AI%23">#AI#</a>\ue627
<a href="https://weibo.com/p/1001"><i class="wbicon">2</i>北京·朝阳区</a>
<a href="javascript:void(0);" action-type="fl_fold">收起<i class="wbicon">d</i></a></p>
<div node-type="feed_list_media_prev"><div class="media media-piclist"><ul class="m3">
<li><img src="//wx3.sinaimg.cn/orj360/abc.jpg"></li><li><img src="https://wx1.sinaimg.cn/mw690/def.gif"></li></ul></div></div>
{retweet}
<div class="from"><a href="//weibo.com/123/Nabc?refer_flag=1">
 10月27日 09:12 </a> 来自 <a href="//app.weibo.com/t/feed/x" rel="nofollow">iPhone客户端</a></div></div></div>
<div class="card-act"><ul>
<li><a action-type="feed_list_forward"><i class="woo-font"></i> 转发</a></li>
<li><a action-type="feed_list_comment"><i class="woo-font"></i> 1.5万</a></li>
<li><a action-type="feed_list_like"><button><span class="woo-like-iconWrap"><svg></svg></span><span class="woo-like-count">100万+</span></button></a></li>
</ul></div></div></div>"""  # noqa: E501 - a card as Weibo serves it
RETWEET_BOX = """<div class="card-comment"><div node-type="feed_list_forwardContent"><a href="//weibo.com/9" nick-name="老王">@老王</a>
<p class="txt">原文</p></div><div class="from"><a href="//weibo.com/9/Xyz">10月26日 08:00</a></div>
<ul class="act s-fr"><li><a action-type="feed_list_like" action-data="mid=777">赞</a></li></ul></div>"""  # noqa: E501


def _current_page(cards: str) -> str:
    pager = ('<div class="m-page"><ul class="s-scroll"><li>1</li><li>2</li></ul>'
             '<a class="next" href="/weibo?q=x&page=2">下一页</a></div>')
    return f"<!DOCTYPE html><html><body>{cards}{pager}</body></html>"


def test_current_layout_card() -> None:
    html = _current_page(CURRENT_CARD.format(mid="42", badge='<svg id="woo_svg_vgold"></svg>', retweet=""))
    page = parsers.parse_search_page(html, "https://s.weibo.com/weibo?q=x", datetime(2025, 11, 1, tzinfo=timezone.utc))
    assert page.layout == "current" and page.page_count == 2 and page.next_url == "https://s.weibo.com/weibo?q=x&page=2"
    post = page.posts[0]
    assert post["text"] == "#AI# 真好[doge] 第二行 @小红 #AI#"
    assert (post["topics"], post["at_users"], post["location"]) == (["AI"], ["小红"], "北京·朝阳区")
    assert (post["mid"], post["bid"], post["user_id"], post["screen_name"]) == ("42", "Nabc", "123", "小明")
    assert post["created_at"] == datetime(2025, 10, 27, 9, 12, tzinfo=BEIJING) and post["source"] == "iPhone客户端"
    assert (post["reposts_count"], post["comments_count"], post["attitudes_count"]) == (0, 15_000, 1_000_000)
    assert post["pics"] == ["https://wx3.sinaimg.cn/large/abc.jpg", "https://wx1.sinaimg.cn/large/def.gif"]
    assert post["user_verified"] == "金V" and post["retweet_id"] is None and post["video_url"] is None


def test_current_layout_repost_card_takes_its_own_fields() -> None:
    html = _current_page(CURRENT_CARD.format(mid="43", badge="", retweet=RETWEET_BOX))
    page = parsers.parse_search_page(html, "https://s.weibo.com/weibo", datetime(2025, 11, 1, tzinfo=timezone.utc))
    post = page.posts[0]
    assert post["retweet_id"] == "777" and post["bid"] == "Nabc" and post["user_verified"] == "普通用户"
    assert post["created_at"] == datetime(2025, 10, 27, 9, 12, tzinfo=BEIJING)


def test_empty_search_page() -> None:
    html = '<html><body><div class="card card-no-result s-pt20b40"><p>抱歉，未找到结果</p></div></body></html>'
    page = parsers.parse_search_page(html, "u", SAVED_2020)
    assert page.empty and page.posts == [] and page.page_count == 0 and page.next_url is None


# ---------------------------------------------------------------------------------------------
# JSON edge cases


def test_json_blocks_and_bad_bodies() -> None:
    with pytest.raises(Blocked) as login:
        parsers.parse_timeline('{"ok":-100,"url":"https://passport.weibo.cn/signin/login?r=x"}', "u", SAVED_2021)
    assert login.value.reason == "login_required" and "passport" in login.value.detail
    gateway = "<html>\r\n<head><title>432</title></head>\r\n<body><center><h1>432</h1></center></body></html>"
    with pytest.raises(Blocked) as bot:
        parsers.parse_profile(gateway, "u")
    assert bot.value.reason == "bot_rejected"
    with pytest.raises(ParseError) as broken:
        parsers.parse_profile('{"ok":1,"data":{"userInfo":{"id":1', "https://m.weibo.cn/api?x")
    assert broken.value.url == "https://m.weibo.cn/api?x" and broken.value.snippet.startswith('{"ok":1')
    assert "not JSON" in str(broken.value) and "https://m.weibo.cn/api?x" in str(broken.value)
    with pytest.raises(ParseError):
        parsers.parse_long_text_detail("<html><body>微博不存在</body></html>", "u")


def test_nothing_here_replies() -> None:
    nothing = '{"ok":0,"msg":"这里还没有内容","data":{"cards":[]}}'
    assert parsers.parse_profile(nothing, "u") is None
    assert parsers.parse_details(nothing, "u") == {}
    page = parsers.parse_timeline(nothing, "u", SAVED_2021)
    assert page.end and page.posts == [] and page.since_id is None
    with pytest.raises(ParseError, match="ok=0"):
        parsers.parse_timeline('{"ok":0,"msg":"请求过于频繁"}', "u", SAVED_2021)


def test_details_region_and_ai_search() -> None:
    details = {"ok": 1, "data": {"cards": [{"card_type": 11, "card_group": [
        {"card_type": 41, "item_name": "生日", "item_content": "1995-03-12"},
        {"card_type": 41, "item_name": "学校", "item_content": "北京大学"},
        {"card_type": 41, "item_name": "标签", "item_content": "旅行"},
        {"card_type": 42, "item_name": "公司", "item_content": "不是41"},
        {"card_type": 41, "item_name": "IP属地", "item_content": " 北京 "}]}]}}
    assert parsers.parse_details(json.dumps(details), "u") == {
        "birthday": "1995-03-12", "education": "北京大学", "ip_region": "北京"}
    assert parsers.parse_region('{"ok":1,"region_name":"发布于 北京"}', "u") == "北京"
    assert parsers.parse_region('{"ok":1}', "u") is None
    ai = {"ok": 1, "data": {"summary": " 新闻 摘要 ", "has_more": True,
                            "list": [{"username": "小明", "user_id": 1, "weibo_id": "55", "content": "好\u200b 的"}]}}
    page = parsers.parse_ai_search(json.dumps(ai, ensure_ascii=False), "u")
    cited = [{"mid": "55", "user_id": "1", "screen_name": "小明", "text": "好 的"}]
    assert page == parsers.AiSearchPage("新闻 摘要", cited, True)


def page_numbered_timeline() -> dict:
    """A page-numbered timeline page in the real shape (written here after nonebot-bison's
    weibo_ys_list_0.json, 2021: cardlistInfo {containerid, v_p, show_style, total, page} and no since_id):
    page 1 of a user with 13 posts, 10 on it, one with 13 pictures of which the list shows 9."""
    data = json.loads(fixture("m_weibo_cn_getIndex_107603_timeline_page.json"))
    data["data"]["cardlistInfo"] = {"containerid": "1076036279793937", "v_p": 42, "show_style": 1, "total": 13,
                                    "page": 2}
    mblog = data["data"]["cards"][4]["mblog"]
    mblog["pic_num"] = 13
    mblog["pics"] = [{"pid": f"p{i}", "url": f"https://wx4.sinaimg.cn/orj360/p{i}.jpg",
                      "large": {"url": f"https://wx4.sinaimg.cn/large/p{i}.jpg"}} for i in range(9)]
    return data


def test_a_page_numbered_timeline_page_names_its_next_page_and_total() -> None:
    page = parsers.parse_timeline(page_numbered_timeline(), "u", SAVED_2021)
    assert (page.since_id, page.next_page, page.total, page.count, page.end) == (None, 2, 13, 10, False)
    mid = str(page_numbered_timeline()["data"]["cards"][4]["mblog"]["id"])
    assert page.needs_pictures == [mid] and len(next(p for p in page.posts if p["mid"] == mid)["pics"]) == 9
    data = page_numbered_timeline()
    del data["data"]["cardlistInfo"]
    unknown = parsers.parse_timeline(data, "u", SAVED_2021)
    assert (unknown.since_id, unknown.next_page, unknown.total, unknown.end) == (None, None, None, False)


def test_timeline_broken_mblog_is_reported_not_fatal() -> None:
    data = json.loads(fixture("m_weibo_cn_getIndex_107603_timeline_page.json"))
    del data["data"]["cards"][3]["mblog"]["created_at"]
    page = parsers.parse_timeline(data, "u", SAVED_2021)
    assert len(page.posts) == 9 and len(page.errors) == 1


def test_a_profile_with_a_count_that_is_not_a_number_is_a_parse_error() -> None:
    url = "https://m.weibo.cn/api/container/getIndex?containerid=1005056279793937"
    data = json.loads(fixture("m_weibo_cn_getIndex_100505_profile.json"))
    data["data"]["userInfo"]["followers_count"] = "很多"
    with pytest.raises(ParseError) as error:
        parsers.parse_profile(json.dumps(data, ensure_ascii=False), url)
    assert error.value.url == url and error.value.snippet.startswith('{"ok": 1')
    assert "很多" in str(error.value)
    data["data"]["userInfo"]["followers_count"] = "145.5万"
    data["data"]["userInfo"]["urank"] = "x"
    with pytest.raises(ParseError, match="urank|'x'"):
        parsers.parse_profile(data, url)


def test_a_timeline_mblog_with_a_bad_pic_num_is_a_parse_error_and_the_others_stay() -> None:
    data = json.loads(fixture("m_weibo_cn_getIndex_107603_timeline_page.json"))
    mblogs = [card["mblog"] for card in data["data"]["cards"] if card.get("card_type") == 9]
    mblogs[2]["pic_num"] = "x"
    page = parsers.parse_timeline(data, "https://m.weibo.cn/t", SAVED_2021)
    assert len(page.posts) == len(mblogs) - 1 and str(mblogs[2]["id"]) not in {p["mid"] for p in page.posts}
    assert [type(e) for e in page.errors] == [ParseError]
    assert page.errors[0].url == "https://m.weibo.cn/t" and "'x'" in str(page.errors[0])


@pytest.mark.parametrize("body", [
    '{"ok":1,"data":{"cards":[{"card_group":["not a dict"]}]}}',  # details
    '{"ok":1,"data":{"cards":["not a dict"]}}',  # timeline
    '{"ok":1,"data":{"list":["not a dict"]}}',  # AI search
])
def test_a_body_of_the_wrong_shape_is_a_parse_error_in_every_parser(body: str) -> None:
    for parse in (parsers.parse_details, parsers.parse_ai_search,
                  lambda b, u: parsers.parse_timeline(b, u, SAVED_2021)):
        try:
            parse(body, "https://m.weibo.cn/x")
        except ParseError as error:
            assert error.url == "https://m.weibo.cn/x" and error.snippet == body
        # Any other exception fails the test; some parsers read the body as valid (nothing of theirs in it).


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(("shown", "value"), [
    ("1万", 10_000), ("1.5万", 15_000), ("145.5万", 1_455_000), ("100万+", 1_000_000), ("2亿", 200_000_000),
    ("转发", 0), ("评论", 0), ("赞", 0), ("", 0), (None, 0), ("3,456", 3456), (" 转发 1261", 1261),
    ("评论 1.2万", 12_000), (42, 42), ("0", 0),
])
def test_parse_count(shown: str | int | None, value: int) -> None:
    assert parsers.parse_count(shown) == value


def test_parse_count_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parsers.parse_count("很多")


@given(st.integers(min_value=0, max_value=9999), st.integers(min_value=0, max_value=9))
def test_parse_count_wan_forms(whole: int, tenth: int) -> None:
    assert parsers.parse_count(str(whole)) == whole
    assert parsers.parse_count(f"{whole}.{tenth}万") == whole * 10_000 + tenth * 1_000


NOW = datetime(2025, 3, 10, 12, 30, 45, tzinfo=timezone.utc)  # 20:30:45 in Beijing


@pytest.mark.parametrize(("shown", "moment"), [
    ("刚刚", NOW),
    ("30秒前", NOW - timedelta(seconds=30)),
    ("5分钟前", NOW - timedelta(minutes=5)),
    ("2小时前", NOW - timedelta(hours=2)),
    ("今天 09:12", datetime(2025, 3, 10, 9, 12, tzinfo=BEIJING)),
    ("今天09:12", datetime(2025, 3, 10, 9, 12, tzinfo=BEIJING)),
    ("昨天 23:59", datetime(2025, 3, 9, 23, 59, tzinfo=BEIJING)),
    ("03月01日 08:00", datetime(2025, 3, 1, 8, 0, tzinfo=BEIJING)),
    ("10月27日 09:12", datetime(2024, 10, 27, 9, 12, tzinfo=BEIJING)),  # would be in the future: last year
    ("\n   04月25日 16:55\n   ", datetime(2024, 4, 25, 16, 55, tzinfo=BEIJING)),
    ("2023年10月27日 09:12", datetime(2023, 10, 27, 9, 12, tzinfo=BEIJING)),
    ("10-27", datetime(2024, 10, 27, tzinfo=BEIJING)),
    ("03-10", datetime(2025, 3, 10, tzinfo=BEIJING)),
    ("2023-10-27", datetime(2023, 10, 27, tzinfo=BEIJING)),
    ("Tue Jun 08 09:35:04 +0800 2021", datetime(2021, 6, 8, 1, 35, 4, tzinfo=timezone.utc)),
])
def test_parse_weibo_time(shown: str, moment: datetime) -> None:
    parsed = parsers.parse_weibo_time(shown, NOW)
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


def test_parse_weibo_time_rejects_other_text() -> None:
    for text in ("明天 09:12", "2月30日 10:00", "", "Tuesday"):
        with pytest.raises(ValueError, match="Weibo time"):
            parsers.parse_weibo_time(text, NOW)


@given(st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2025, 3, 10)))
def test_parse_weibo_time_round_trips_dated_forms(naive: datetime) -> None:
    moment = naive.replace(second=0, microsecond=0, tzinfo=BEIJING)
    shown = f"{moment:%Y}年{moment:%m}月{moment:%d}日 {moment:%H:%M}"
    assert parsers.parse_weibo_time(shown, NOW) == moment
    weekday = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[moment.month - 1]
    full = f"{weekday} {month} {moment:%d %H:%M:%S} +0800 {moment.year}"
    assert parsers.parse_weibo_time(full, NOW) == moment


@given(st.text())
def test_clean_text_is_a_fixed_point(text: str) -> None:
    cleaned = parsers.clean_text(text)
    assert parsers.clean_text(cleaned) == cleaned
    assert cleaned == cleaned.strip() and "  " not in cleaned and "\n" not in cleaned
    assert "\u200b" not in cleaned and "\ue627" not in cleaned


def test_clean_text_examples() -> None:
    assert parsers.clean_text("\u200b 你好\n\n  世界\ue627\t!  ") == "你好 世界 !"


# ---------------------------------------------------------------------------------------------
# video and live cards, deep nesting


def test_video_cards_leave_the_2020_search_page_and_the_text_around_them_stays(page_2020) -> None:
    html = fixture("s_weibo_com_search_page_2020.html")
    assert html.count('<i class="wbicon">L</i>') >= 10  # the video cards of this page
    texts = [post["text"] for post in page_2020.posts]
    assert not [t for t in texts if "的微博视频" in t or "的秒拍视频" in t]
    cat = next(t for t in texts if "带猫上网课走红" in t)
    assert "被迫营业喵喵！ @封面新闻" in cat  # the card between them is gone, both sides stay


@pytest.mark.parametrize("card", [
    '<a href="http://t.cn/A6AbPBWu" target="_blank"><i class="wbicon">L</i>小明的微博直播</a>',
    '<a href="https://video.weibo.com/show?fid=1034:1" data-hide=""><span class=\'url-icon\'><img '
    "src='https://h5.sinaimg.cn/upload/2015/09/25/3/timeline_card_small_video_default.png'></span>"
    '<span class="surl-text">小明的微博视频</span></a>',
])
def test_a_media_card_goes_but_words_like_its_label_stay(card: str) -> None:
    # The over-eager cleaning regex [\w\-]{0,30}的微博(视频|直播) would empty this text; only the link is markup.
    from crawl_actors.parsers.text import rich_html

    rich = rich_html(f"今天看了直播太开心了小明的微博直播 {card} <a href='/n/小红'>@小红</a>")
    assert rich.text == "今天看了直播太开心了小明的微博直播 @小红" and rich.at_users == ["小红"]


def test_links_that_are_not_media_cards_keep_their_text() -> None:
    from crawl_actors.parsers.text import rich_html

    web = ("<a href='http://t.cn/x'><span class='url-icon'><img src='https://h5.sinaimg.cn/upload/2015/09/25/3/"
           "timeline_card_small_web_default.png'></span><span class='surl-text'>网页链接</span></a>")
    plain = "<a href='http://t.cn/y'>我的微博视频</a>"  # no card icon: a plain link the user wrote
    assert rich_html(f"看 {web} 和 {plain}").text == "看 网页链接 和 我的微博视频"


@pytest.mark.parametrize("depth", [200, 5_000, 50_000])
def test_deeply_nested_pages_are_parse_errors_with_url_and_snippet(depth: int) -> None:
    url = "https://m.weibo.cn/api/container/getIndex?containerid=1076031"
    nested = "[" * depth + "]" * depth
    body = '{"ok":1,"data":{"cardlistInfo":{"total":1},"cards":' + nested + "}}"
    try:
        parsers.parse_timeline(body, url, SAVED_2021)
    except ParseError as error:
        assert error.url == url and error.snippet.startswith('{"ok":1')
    deep_html = "<div>" * depth + "x" + "</div>" * depth
    try:
        parsers.parse_long_text(json.dumps({"ok": 1, "data": {"longTextContent": deep_html}}), url)
    except ParseError as error:
        assert error.url == url and error.snippet
    card = parsers.parse_search_page(
        fixture("s_weibo_com_search_page_2020.html").replace('<p class="txt"', '<p class="txt">' + deep_html + "<p", 1),
        SEARCH_URL, SAVED_2020)
    assert len(card.posts) + len(card.errors) == 20


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=30))
def test_any_json_is_a_page_or_a_parse_error(value) -> None:
    body = json.dumps({"ok": 1, "data": {"cards": value, "cardlistInfo": value, "userInfo": value, "list": value}})
    for parse in (parsers.parse_details, parsers.parse_ai_search, parsers.parse_profile,
                  lambda b, u: parsers.parse_timeline(b, u, SAVED_2021)):
        try:
            parse(body, "u")
        except ParseError:
            pass
