"""What each crawl task fetches, and what its page yields: rows for the tables and the tasks it leads to.

Pure functions, no I/O: `request_for(task)` builds the request, `handle(task, page, config)` parses
a fetched body into a `TaskResult`. Search follows the research crawler: a query whose first page
shows >= `split_at_pages` pages is not read but re-asked finer (whole range -> days -> hours ->
provinces -> cities), otherwise its pages are followed up to Weibo's 50-page cap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from crawl_actors import parsers
from crawl_actors.config import CrawlConfig, WeiboEndpoints
from crawl_actors.frontier import Task
from crawl_actors.parsers import BEIJING
from crawl_actors.regions import WHOLE_PROVINCE, city_codes, province_codes

MAX_SEARCH_PAGES = 50
HOST_OF = {
    "search": "search",
    "ai_search": "ai",
    "profile": "mobile",
    "details": "mobile",
    "timeline": "mobile",
    "long_text": "mobile",
    "region": "ajax",
}
# What each id taken from a response may look like before it goes into a URL (uid, mid, since_id are
# numbers; bid is base62). Anything else is an error row, never a request to another path or host.
ID_PATTERNS = {
    "uid": re.compile(r"[0-9]{1,20}"),
    "mid": re.compile(r"[0-9]{1,20}"),
    "since_id": re.compile(r"[0-9]{1,20}"),
    "bid": re.compile(r"[0-9A-Za-z]{1,20}"),
}
MAX_PAGE = 10_000
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


@dataclass
class TaskResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    children: list[Task] = field(default_factory=list)
    # Problems with parts of the page (e.g. one broken card); the rest of the page still counts.
    partial_errors: list[parsers.ParseError] = field(default_factory=list)

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.setdefault(table, []).extend(rows)


class BadTask(ValueError):
    """A task whose ids must not go into a URL (taken from a response, or an old journal)."""


def checked_id(name: str, value: Any) -> str:
    """`value` as the id `name` (uid, mid, bid, since_id), or BadTask when it is not one."""
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not ID_PATTERNS[name].fullmatch(text):
        raise BadTask(f"{name} {str(value)[:40]!r} is not a Weibo {name}: not requested")
    return text


def checked_page(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise BadTask(f"page {str(value)[:40]!r} is not a page number in 1..{MAX_PAGE}: not requested")
    return value


def seed_tasks(
    topic: str, start: datetime | None, end: datetime | None, sources: Iterable[str], hashtag: bool = True
) -> list[Task]:
    """The first tasks of a crawl for one topic: a hashtag is searched as #topic#, a plain keyword as is."""
    tasks = []
    if "search" in sources:
        if start is None or end is None:
            raise ValueError("searching needs a time range: set start and end")
        tasks.append(search_task(topic, start, end, None, None, page=1, level="range", hashtag=hashtag))
    if "ai_search" in sources:
        tasks.append(Task("ai_search", f"{topic}|1", {"topic": topic, "page": 1}))
    return tasks


def search_task(
    topic: str, start: datetime, end: datetime, province: int | None, city: int | None, page: int, level: str,
    hashtag: bool = True,
) -> Task:
    region = f"{province}:{city}" if province is not None else "all"
    span = f"{_hour(start)}:{_hour(end)}"
    params = {"topic": topic, "start": start.isoformat(), "end": end.isoformat(), "province": province,
              "city": city, "page": page, "level": level, "hashtag": hashtag}
    # A keyword search is another query than the hashtag of the same word; hashtags keep the older keys.
    return Task("search", f"{topic}|{span}|{region}|{page}" + ("" if hashtag else "|keyword"), params)


def request_for(task: Task, endpoints: WeiboEndpoints, now: datetime) -> tuple[str, dict[str, str]]:
    """(url, headers without the cookie) for a task."""
    try:
        url_of = _URLS[task.kind]
    except KeyError:
        raise ValueError(f"unknown task kind {task.kind!r}") from None
    p = task.params
    for name in ("uid", "mid", "bid", "since_id"):
        if p.get(name) is not None:
            checked_id(name, p[name])
    for name in ("page", "page_number"):
        if p.get(name) is not None:
            checked_page(p[name])
    return url_of(p, endpoints, now), _headers(HOST_OF[task.kind], endpoints)


def _headers(host: str, endpoints: WeiboEndpoints) -> dict[str, str]:
    headers = {"User-Agent": BROWSER_UA, "Referer": f"{getattr(endpoints, host)}/"}
    if host == "mobile":
        headers["X-Requested-With"] = "XMLHttpRequest"
    return headers


def _search_url(p: dict[str, Any], endpoints: WeiboEndpoints, now: datetime) -> str:
    query = f"#{p['topic']}#" if p.get("hashtag", True) else p["topic"]
    url = (
        f"{endpoints.search}/weibo?q={quote(query)}&scope=ori&suball=1"
        f"&timescope=custom:{_hour(_dt(p['start']))}:{_hour(_dt(p['end']))}"
    )
    if p["province"] is not None:
        url += f"&region=custom:{p['province']}:{p['city'] or WHOLE_PROVINCE}"
    if p["page"] > 1:
        url += f"&page={p['page']}"
    return url


def _ai_search_url(p: dict[str, Any], endpoints: WeiboEndpoints, now: datetime) -> str:
    return f"{endpoints.ai}/web/other/ai/blogs2?dt={int(now.timestamp())}&query={quote(p['topic'])}&page={p['page']}"


def _container(endpoints: WeiboEndpoints, containerid: str) -> str:
    return f"{endpoints.mobile}/api/container/getIndex?containerid={containerid}"


_URLS: dict[str, Callable[[dict[str, Any], WeiboEndpoints, datetime], str]] = {
    "search": _search_url,
    "ai_search": _ai_search_url,
    "region": lambda p, endpoints, now: f"{endpoints.ajax}/ajax/statuses/show?id={p['bid']}",
    "profile": lambda p, endpoints, now: _container(endpoints, f"100505{p['uid']}"),
    "details": lambda p, endpoints, now: _container(endpoints, f"230283{p['uid']}_-_INFO"),
    "timeline": lambda p, endpoints, now: _timeline_url(p, endpoints),
    "long_text": lambda p, endpoints, now: _long_text_url(p, endpoints),
}


def _timeline_url(p: dict[str, Any], endpoints: WeiboEndpoints) -> str:
    """Page 1, then whichever way the previous page said to go on: its since_id, or a page number."""
    url = _container(endpoints, f"107603{p['uid']}")
    if p.get("since_id"):
        return f"{url}&since_id={p['since_id']}"
    return f"{url}&page={p.get('page_number') or p['page']}"


def _long_text_url(p: dict[str, Any], endpoints: WeiboEndpoints) -> str:
    """The detail page when all pictures are wanted (it has the whole status), else statuses/extend."""
    if p.get("detail"):
        return f"{endpoints.mobile}/detail/{p['mid']}"
    return f"{endpoints.mobile}/statuses/extend?id={p['mid']}"


def handle(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    """Parse a fetched body (served at `now`); raises parsers.ParseError / parsers.Blocked for the
    caller to classify."""
    handler = _HANDLERS[task.kind]
    return handler(task, body, url, now, config)


def _search(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    p = task.params
    page = parsers.parse_search_page(body, url, now)
    result = TaskResult(partial_errors=list(getattr(page, "errors", [])))
    if page.empty:
        return result
    if p["page"] == 1 and page.page_count >= config.split_at_pages:
        finer = _split(p)
        if finer:
            result.children.extend(finer)
            return result
    posts = [{**post, "query": p["topic"], "found_by": "search", "region": None} for post in page.posts]
    result.add("posts", posts)
    if page.next_url and p["page"] < MAX_SEARCH_PAGES:
        start, end = _dt(p["start"]), _dt(p["end"])
        result.children.append(search_task(p["topic"], start, end, p["province"], p["city"], p["page"] + 1, p["level"],
                                           hashtag=p.get("hashtag", True)))
    result.children.extend(_follow_posts(posts, config, url, result))
    return result


def _split(p: dict[str, Any]) -> list[Task]:
    """The next finer slicing of a search that showed too many pages; [] when it cannot be split.

    A slice only ever yields strictly smaller slices, so splitting always ends (at one city-hour).
    """
    start, end, level = _dt(p["start"]), _dt(p["end"]), p["level"]

    def first_page(a: datetime, b: datetime, province: int | None, city: int | None, finer: str) -> Task:
        return search_task(p["topic"], a, b, province, city, 1, finer, hashtag=p.get("hashtag", True))

    if level == "range" and end - start > timedelta(days=1):
        return [first_page(a, b, None, None, "day") for a, b in _cuts(start, end, timedelta(days=1))]
    if level in ("range", "day") and end - start > timedelta(hours=1):
        return [first_page(a, b, None, None, "hour") for a, b in _cuts(start, end, timedelta(hours=1))]
    if level in ("range", "day", "hour"):
        return [first_page(start, end, code, None, "province") for code in province_codes()]
    if level == "province":
        return [first_page(start, end, p["province"], city, "city") for city in city_codes(p["province"])]
    return []


def _cuts(start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    cuts, cursor = [], start
    while cursor < end:
        cuts.append((cursor, min(cursor + step, end)))
        cursor += step
    return cuts


def _follow_posts(posts: list[dict[str, Any]], config: CrawlConfig, url: str, result: TaskResult) -> list[Task]:
    children: list[Task] = []
    for post in posts:
        if config.fetch_regions and post.get("bid") and _valid(result, url, post, bid=post["bid"]):
            children.append(Task("region", post["bid"], {"bid": post["bid"]}))
        if _valid(result, url, post, uid=post["user_id"]):
            children.extend(user_tasks(post["user_id"], config))
    return children


def _valid(result: TaskResult, url: str, row: dict[str, Any], **ids: Any) -> bool:
    """Whether the ids taken from a response may go into a URL; a hostile one is a partial error."""
    try:
        for name, value in ids.items():
            checked_id(name, value)
    except BadTask as error:
        result.partial_errors.append(parsers.ParseError(url, str(row), str(error)))
        return False
    return True


def user_tasks(uid: str, config: CrawlConfig) -> list[Task]:
    tasks = [Task("profile", uid, {"uid": uid}), Task("timeline", f"{uid}|1", {"uid": uid, "page": 1, "kept": 0})]
    if config.fetch_details:
        tasks.append(Task("details", uid, {"uid": uid}))
    return tasks


def _ai_search(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    p = task.params
    page = parsers.parse_ai_search(body, url)
    result = TaskResult()
    if p["page"] == 1:
        result.add("topics", [{"topic": p["topic"], "news": page.summary, "source": "ai_search"}])
    posts = [_ai_post(post, p["topic"]) for post in page.posts]
    result.add("posts", posts)
    if page.has_more and p["page"] < MAX_PAGE:
        result.children.append(Task("ai_search", f"{p['topic']}|{p['page'] + 1}", {**p, "page": p["page"] + 1}))
    for post in posts:
        if _valid(result, url, post, uid=post["user_id"]):
            result.children.extend(user_tasks(post["user_id"], config))
    return result


def _ai_post(post: dict[str, Any], topic: str) -> dict[str, Any]:
    return {
        "mid": post["mid"], "user_id": post["user_id"], "screen_name": post.get("screen_name"),
        "text": post["text"], "topics": post.get("topics"), "at_users": post.get("at_users"),
        "query": topic, "found_by": "ai_search",
    }


def _profile(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    result = TaskResult()
    user = parsers.parse_profile(body, url)
    if user is not None:
        result.add("users", [user])
    return result


def _details(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    result = TaskResult()
    result.add("user_details", [{"user_id": task.params["uid"], **parsers.parse_details(body, url)}])
    return result


def _timeline(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    """One timeline page. The next page is asked for the way this one says (its since_id, or its page
    number: real responses carry one or the other); the timeline ends at an empty page, once `total`
    posts were seen, or at the limits (max_pages_per_user, max_posts_per_user, history_days)."""
    p = task.params
    page = parsers.parse_timeline(body, url, now)
    result = TaskResult(partial_errors=list(page.errors))
    kept, reached_old = _history_to_keep(page.posts, p, config)
    result.add("history", kept)
    wanted = {post["mid"] for post in kept}
    for mid in dict.fromkeys(page.needs_long_text + page.needs_pictures):
        pictures = config.fetch_all_pictures and mid in page.needs_pictures
        if mid in wanted and (pictures or config.fetch_long_text) and _valid(result, url, {"mid": mid}, mid=mid):
            params = {"mid": mid, "uid": p["uid"], **({"detail": True} if pictures else {})}
            result.children.append(Task("long_text", mid, params))
    total, seen = p["kept"] + len(kept), p.get("seen", 0) + page.count
    reached_total = page.total is not None and seen >= page.total
    more = not page.end and not reached_old and not reached_total and total < config.max_posts_per_user
    if more and p["page"] < min(config.max_pages_per_user, MAX_PAGE):
        following = _next_page(p, page, url, result)
        if following is not None:
            following.update({"uid": p["uid"], "page": p["page"] + 1, "kept": total, "seen": seen})
            result.children.append(Task("timeline", f"{p['uid']}|{p['page'] + 1}", following))
    return result


def _next_page(p: dict[str, Any], page: parsers.TimelinePage, url: str, result: TaskResult) -> dict[str, Any] | None:
    """How to ask for the page after this one: {'since_id'} or {'page_number'}; None (a partial error)
    when the response names the next page with something that must not go into a URL."""
    try:
        if page.since_id is not None:
            return {"since_id": checked_id("since_id", page.since_id)}
        if page.next_page is not None:
            return {"page_number": checked_page(page.next_page)}
    except BadTask as error:
        result.partial_errors.append(parsers.ParseError(url, None, f"timeline of {p['uid']}: {error}"))
        return None
    return {}


def _history_to_keep(posts: list[dict[str, Any]], p: dict[str, Any], config: CrawlConfig) -> tuple[list, bool]:
    """The posts of a timeline page that the per-user limits keep, and whether one was too old."""
    since = config.history_since(datetime.now(timezone.utc))  # our clock, not the server's (relative times)
    room = config.max_posts_per_user - p["kept"]
    kept, reached_old = [], False
    for post in posts:
        if since is not None and post.get("created_at") and post["created_at"] < since:
            # A pinned post may be old while newer ones follow it; only an old regular post ends the history.
            reached_old = reached_old or not post.get("is_pinned")
            continue
        if len(kept) < room:
            kept.append({**post, "user_id": post.get("user_id") or p["uid"]})
    return kept, reached_old


def _long_text(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    result = TaskResult()
    mid = task.params["mid"]
    # The truncated timeline text also lacks the hashtags and @users past the cut: take all three.
    if task.params.get("detail"):  # the detail page: the whole status, every picture included
        detail = parsers.parse_detail_page(body, url)
        rich = detail.rich
        result.add("pictures", [{"user_id": task.params["uid"], "mid": mid, "text": rich.text,
                                 "pics": detail.pics}])
    else:
        rich = parsers.parse_long_text(body, url)
    result.add("long_texts", [{"mid": mid, "text": rich.text, "topics": rich.topics, "at_users": rich.at_users}])
    return result


def _region(task: Task, body: str, url: str, now: datetime, config: CrawlConfig) -> TaskResult:
    result = TaskResult()
    result.add("regions", [{"bid": task.params["bid"], "region": parsers.parse_region(body, url)}])
    return result


_HANDLERS = {
    "search": _search,
    "ai_search": _ai_search,
    "profile": _profile,
    "details": _details,
    "timeline": _timeline,
    "long_text": _long_text,
    "region": _region,
}


def _hour(moment: datetime) -> str:
    local = moment.astimezone(BEIJING)
    return f"{local:%Y-%m-%d}-{local.hour}"


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)
