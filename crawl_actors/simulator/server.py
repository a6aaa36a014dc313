"""The simulator's HTTP server: one aiohttp app whose paths stand for Weibo's hosts.

    GET /weibo?q=<kw>&scope=ori&suball=1&timescope=custom:<YYYY-MM-DD-H>:<YYYY-MM-DD-H>
              [&region=custom:<prov>:<city|1000>][&page=N]
                                                 search (s.weibo.com), HTML; time range [start, end) in Beijing
                                                 hours; '#x#' finds posts with that hashtag, a plain keyword the
                                                 posts whose text contains it (a topic's name: its posts)
    GET /api/container/getIndex?containerid=100505<uid> | 230283<uid>_-_INFO | 107603<uid> | 230413<uid>
              [&page=N | &since_id=MID]          profile, details, timeline (m.weibo.cn), JSON; the timeline names
                                                 its next page by since_id or by page number (timeline_paging)
    GET /detail/<mid>, GET /statuses/extend?id=<mid>   long text (m.weibo.cn)
    GET /ajax/statuses/show?id=<bid>             IP region (weibo.com), JSON
    GET /web/other/ai/blogs2?dt=<ts>&query=<q>[&page=N]  AI search, JSON
    GET /visitor/visitor?...                     the Sina Visitor System page
    GET /_sim/stats                              counters, JSON

Every content request passes a gate, in this order (none of it applies to /visitor and /_sim):
1. a bot User-Agent (missing, python-requests, aiohttp, curl, ...) -> 432 with an HTML body;
2. the cookie (its SUB value names it): unknown or missing -> search 302 to the visitor page, others
   432; expired -> search 302 to the visitor page, others 200 `{"ok":-100,"url":"...passport..."}`;
3. a token bucket per cookie and host class (search, mobile, ajax, ai) holding burst + rate x jitter_s
   tokens: a request that finds it empty is a violation, answered 418, or 414 when the cookie sent more than
   `flood_rps` requests in the last second;
4. fault injection (seeded, drawn per request, never a violation): malformed HTML/JSON (the body cut
   to 60%), 500/502/503, slow (delayed, then correct), truncated (Content-Length of the whole body,
   half of it sent, connection closed).
Every response carries the simulator's clock in its Date header: parse relative times against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from aiohttp import web

from cluster.http_thread import serve_in_thread
from crawl_actors.regions import WHOLE_PROVINCE
from crawl_actors.simulator import render
from crawl_actors.simulator.config import FAULT_KINDS, SimulatorConfig
from crawl_actors.simulator.corpus import BEIJING, Corpus, build_corpus
from crawl_actors.simulator.truth import ground_truth

AI_SEARCH_POSTS = 30  # the most-liked posts of a topic that the AI search cites
AI_PAGE_SIZE = 10
_BOT_AGENTS = ("python-requests", "aiohttp", "python-urllib", "python-httpx", "curl/", "wget/", "go-http-client",
               "scrapy", "okhttp")


def cookie_hash(cookie: str) -> str:
    """How stats name a cookie: the first 10 hex characters of its sha256 (cookies are never logged)."""
    return hashlib.sha256(cookie.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class CrawlTopic:
    """A topic to crawl: search `query` over `timescope` ([start, end), whole Beijing hours)."""

    name: str
    category: str
    start: datetime
    end: datetime
    hot: bool

    @property
    def query(self) -> str:
        return f"#{self.name}#"

    @property
    def timescope(self) -> str:
        return f"custom:{_weibo_hour(self.start)}:{_weibo_hour(self.end)}"


def _weibo_hour(moment: datetime) -> str:
    local = moment.astimezone(BEIJING)
    return f"{local:%Y-%m-%d}-{local.hour}"


def host_class(path: str) -> str:
    if path == "/weibo":
        return "search"
    if path.startswith(("/api/", "/detail/", "/statuses/")):
        return "mobile"
    if path.startswith("/ajax/"):
        return "ajax"
    if path.startswith("/web/other/ai/"):
        return "ai"
    return "visitor" if path.startswith("/visitor/") else "control"


class _Bucket:
    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity, self.tokens, self.stamp = rate, capacity, capacity, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Gatekeeper:
    """Cookies, rate limits, faults and counters, shared by the server thread and the caller's."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.cookies: dict[str, str] = {}  # SUB value -> the cookie as issued
        self.expired: set[str] = set()
        self.buckets: dict[tuple[str, str], _Bucket] = {}
        self.recent: dict[str, deque[float]] = defaultdict(deque)
        self.fault_rate, self.fault_kinds = config.fault_rate, config.fault_kinds
        self.fault_delay_s = config.fault_delay_s
        self.fault_rng = random.Random(f"faults:{config.seed}")
        self.cookie_rng = random.Random(f"cookies:{config.seed}")
        self.counts: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_class: Counter[str] = Counter()
        self.by_cookie: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        for cookie in config.cookies:
            self.add_cookie(cookie)

    def add_cookie(self, cookie: str) -> None:
        sub = _sub_of(cookie)
        if sub is None:
            raise ValueError("a simulator cookie needs a SUB=... part")
        with self.lock:
            self.cookies[sub] = cookie
            self.expired.discard(sub)

    def new_cookie(self) -> str:
        with self.lock:
            cookie = f"SUB=sim-{self.cookie_rng.getrandbits(96):024x}; SUBP=sim-{self.cookie_rng.getrandbits(64):016x}"
        self.add_cookie(cookie)
        return cookie

    def expire(self, cookie: str) -> None:
        sub = _sub_of(cookie)
        with self.lock:
            if sub not in self.cookies:
                raise KeyError("the simulator never issued this cookie")
            self.expired.add(sub)

    def expire_all(self) -> None:
        with self.lock:
            self.expired.update(self.cookies)

    def identify(self, header: str | None) -> tuple[str | None, bool]:
        """(the issued cookie, whether it has expired); (None, False) for an unknown or missing one."""
        sub = _sub_of(header or "")
        with self.lock:
            cookie = self.cookies.get(sub or "")
            return cookie, sub in self.expired

    def admit(self, cookie: str, kind: str) -> int | None:
        """None if the request is within the cookie's budget; else the status of the violation."""
        now, key = time.monotonic(), cookie_hash(cookie)
        limit = self.config.rates[kind]
        with self.lock:
            recent = self.recent[key]
            recent.append(now)
            while recent and recent[0] < now - 1.0:
                recent.popleft()
            slack = limit.rate * self.config.jitter_s  # jitter_s seconds' worth of tokens, a fraction at low rates
            bucket = self.buckets.setdefault((key, kind), _Bucket(limit.rate, limit.burst + slack, now))
            if bucket.take(now):
                return None
            self.violations[key] += 1
            return 414 if len(recent) > self.config.flood_rps else 418

    def draw_fault(self, html: bool) -> str | None:
        with self.lock:
            if self.fault_rate <= 0 or self.fault_rng.random() >= self.fault_rate:
                return None
            wrong = "malformed_json" if html else "malformed_html"
            kinds = [kind for kind in self.fault_kinds if kind != wrong]
            if not kinds:
                return None
            kind = self.fault_rng.choice(kinds)
            self.faults[kind] += 1
            return kind

    def set_faults(self, rate: float, kinds: Iterable[str] | None, delay_s: float | None) -> None:
        kinds = tuple(kinds) if kinds is not None else FAULT_KINDS
        if not 0.0 <= rate <= 1.0 or not set(kinds) <= set(FAULT_KINDS):
            raise ValueError(f"set_faults needs 0 <= rate <= 1 and kinds among {FAULT_KINDS}")
        with self.lock:
            self.fault_rate, self.fault_kinds = rate, kinds
            if delay_s is not None:
                self.fault_delay_s = delay_s

    def record(self, kind: str, status: int, cookie: str | None) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.by_status[str(status)] += 1
            self.by_class[kind] += 1
            if cookie is not None:
                self.by_cookie[cookie_hash(cookie)] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.counts["requests"], "by_status": dict(self.by_status),
                "by_class": dict(self.by_class), "requests_by_cookie": dict(self.by_cookie),
                "violations": sum(self.violations.values()), "violations_by_cookie": dict(self.violations),
                "faults": sum(self.faults.values()), "faults_by_kind": dict(self.faults),
            }


def _sub_of(cookie: str) -> str | None:
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "SUB" and value:
            return value
    return None


def _is_bot(user_agent: str | None) -> bool:
    agent = (user_agent or "").lower()
    return not agent or any(marker in agent for marker in _BOT_AGENTS)


class WeiboSimulator:
    """A local Weibo serving a seeded corpus. Use `with sim.running(): ...` to serve it."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.corpus: Corpus = build_corpus(self.config)
        _check_clock(self.config, self.corpus)
        self._gate = _Gatekeeper(self.config)
        self._tags = _tag_index(self.corpus)
        self._base_url: str | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the simulator is not running: use `with sim.running():`")
        return self._base_url

    def now(self) -> datetime:
        return self.config.now or datetime.now(timezone.utc)

    def new_cookies(self, n: int) -> list[str]:
        return [self._gate.new_cookie() for _ in range(n)]

    def expire_cookie(self, cookie: str) -> None:
        self._gate.expire(cookie)

    def ban_all(self) -> None:
        self._gate.expire_all()

    def set_faults(self, rate: float, kinds: Iterable[str] | None = None, delay_s: float | None = None) -> None:
        self._gate.set_faults(rate, kinds, delay_s)

    def stats(self) -> dict[str, Any]:
        return self._gate.stats()

    def topics(self) -> list[CrawlTopic]:
        return [CrawlTopic(t.name, t.category, t.start, t.end, t.hot) for t in self.corpus.topics]

    def search_window(self) -> tuple[str, str]:
        """A crawl's (start, end) over every topic, as a user writes them (YYYY-MM-DD-H, Beijing time)."""
        topics = self.topics()
        return _weibo_hour(min(t.start for t in topics)), _weibo_hour(max(t.end for t in topics))

    def ground_truth(self, max_posts_per_user: int | None = None, max_pages_per_user: int | None = None,
                     since: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
        return ground_truth(self.corpus, max_posts_per_user, max_pages_per_user, since)

    @contextmanager
    def running(self) -> Iterator[WeiboSimulator]:
        """Serve on config.host:config.port (0: a free port) from a background thread until the block ends."""
        if self._base_url is not None:
            raise RuntimeError("the simulator is already running")
        with serve_in_thread(self._app(), self.config.host, self.config.port, name="weibo-simulator") as url:
            self._base_url = url
            try:
                yield self
            finally:
                self._base_url = None

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._gatekeeping])
        app.router.add_get("/weibo", self._search)
        app.router.add_get("/api/container/getIndex", self._get_index)
        app.router.add_get("/detail/{mid}", self._detail)
        app.router.add_get("/statuses/extend", self._extend)
        app.router.add_get("/ajax/statuses/show", self._region)
        app.router.add_get("/web/other/ai/blogs2", self._ai_search)
        app.router.add_get("/visitor/visitor", self._visitor)
        app.router.add_get("/_sim/stats", self._stats)
        return app

    @web.middleware
    async def _gatekeeping(self, request: web.Request, handler) -> web.StreamResponse:
        kind = host_class(request.path)
        cookie = None
        if kind in ("visitor", "control"):
            response = await handler(request)
        else:
            cookie, response = self._refusal(request, kind)
            if response is None:
                response = await self._with_fault(request, handler, kind)
        if kind != "control":
            self._gate.record(kind, response.status, cookie)
        return response

    def _refusal(self, request: web.Request, kind: str) -> tuple[str | None, web.StreamResponse | None]:
        if _is_bot(request.headers.get("User-Agent")):
            return None, self._html(render.gateway_html(432), 432)
        cookie, expired = self._gate.identify(request.headers.get("Cookie"))
        if cookie is None or expired:
            if kind == "search":
                return cookie, self._to_visitor(request)
            if cookie is None:
                return None, self._html(render.gateway_html(432), 432)
            return cookie, self._json(render.login_required_json(str(request.url)))
        violation = self._gate.admit(cookie, kind)
        if violation is not None:
            return cookie, self._html(render.gateway_html(violation), violation)
        return cookie, None

    async def _with_fault(self, request: web.Request, handler, kind: str) -> web.StreamResponse:
        is_html = kind == "search" or request.path.startswith("/detail/")
        fault = self._gate.draw_fault(is_html)
        if fault in ("http_500", "http_502", "http_503"):
            status = int(fault[-3:])
            return self._html(f"<html><body><h1>{status}</h1></body></html>", status)
        if fault == "slow":
            await asyncio.sleep(self._gate.fault_delay_s)
        response = await handler(request)
        if fault in ("malformed_html", "malformed_json") and isinstance(response, web.Response) and response.body:
            body = bytes(response.body)
            response.body = body[: len(body) * 3 // 5]
        elif fault == "truncated" and isinstance(response, web.Response) and response.body:
            return await self._truncated(request, response)
        return response

    async def _truncated(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        body = bytes(response.body)
        stream = web.StreamResponse(status=response.status, headers={"Date": response.headers["Date"]})
        stream.content_type, stream.charset = response.content_type, response.charset
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()  # the client sees the connection end before Content-Length
        return stream

    def _html(self, text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                            headers={"Date": render.http_date(self.now())})

    def _json(self, data: dict, status: int = 200) -> web.Response:
        return web.Response(text=json.dumps(data, ensure_ascii=False), status=status,
                            content_type="application/json", charset="utf-8",
                            headers={"Date": render.http_date(self.now())})

    def _to_visitor(self, request: web.Request) -> web.Response:
        back = quote(str(request.url), safe="")
        target = f"{request.url.origin()}/visitor/visitor?entry=miniblog&a=enter&url={back}&retcode=6102"
        return web.Response(status=302, headers={"Location": target, "Date": render.http_date(self.now())})

    # -- handlers ---------------------------------------------------------------------------

    async def _search(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "")
        mids = self._search_matches(query, request.query.get("timescope"), request.query.get("region"))
        # Weibo marks the query in the results: a hashtag's name, or a plain keyword where it is a hashtag.
        highlight = query[1:-1] if len(query) > 2 and query.startswith("#") and query.endswith("#") else query or None
        html = render.search_page_html(self.corpus, mids, _int(request.query.get("page"), 1),
                                       list(request.query.items()), self.now(), self.config.search_layout, highlight)
        return self._html(html)

    def _search_matches(self, query: str, timescope: str | None, region: str | None) -> list[str]:
        if len(query) > 2 and query.startswith("#") and query.endswith("#"):
            mids = self._tags.get(query[1:-1], [])
        else:
            mids = [mid for mid in self._tags[""] if query and query in self.corpus.posts[mid].text]
        window, area = _timescope(timescope), _region(region)
        if window is None or area is None:
            return []
        start, end = window
        province, city = area
        posts = self.corpus.posts
        return [mid for mid in mids
                if (start is None or start <= posts[mid].created_at < end)
                and (province is None or posts[mid].province == province)
                and (city is None or posts[mid].city == city)]

    async def _get_index(self, request: web.Request) -> web.Response:
        containerid = request.query.get("containerid", "")
        prefix, rest = containerid[:6], containerid[6:]
        if prefix == "100505" and rest in self.corpus.users:
            return self._json(render.profile_json(self.corpus.users[rest]))
        if prefix == "230283" and rest.endswith("_-_INFO") and rest[:-7] in self.corpus.users:
            return self._json(render.details_json(self.corpus.users[rest[:-7]]))
        if prefix in ("107603", "230413") and rest in self.corpus.users:
            return self._json(self._timeline(containerid, rest, request))
        return self._json(render.NOTHING_HERE)

    def _timeline(self, containerid: str, uid: str, request: web.Request) -> dict:
        """Either way of asking is answered (since_id or page); the reply names the next page the
        configured way (`timeline_paging`)."""
        mids = self.corpus.timelines[uid]
        since_id = request.query.get("since_id")
        if since_id:
            start = mids.index(since_id) if since_id in mids else len(mids)
            page = start // render.TIMELINE_PAGE_SIZE + 1
        else:
            page = _int(request.query.get("page"), 1)
            start = (page - 1) * render.TIMELINE_PAGE_SIZE
        if start >= len(mids) or start < 0:
            return render.NOTHING_HERE
        return render.timeline_json(self.corpus, uid, containerid, start, self.config.timeline_paging, page)

    async def _detail(self, request: web.Request) -> web.Response:
        post = self.corpus.posts.get(request.match_info["mid"])
        if post is None:
            return self._html("<!DOCTYPE html><html><body><p>微博不存在或暂无查看权限</p></body></html>")
        return self._html(render.detail_html(self.corpus, post))

    async def _extend(self, request: web.Request) -> web.Response:
        post = self.corpus.posts.get(request.query.get("id", ""))
        if post is None:
            return self._json({"ok": 0, "msg": "微博不存在或暂无查看权限"})
        return self._json(render.extend_json(post))

    async def _region(self, request: web.Request) -> web.Response:
        key = request.query.get("id", "")
        post = self.corpus.posts.get(self.corpus.by_bid.get(key, key))
        if post is None:
            return self._json({"ok": 0, "error_type": "toast", "message": "目标微博不存在"})
        return self._json(render.region_json(self.corpus, post))

    async def _ai_search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "").strip()
        topic = next((t for t in self.corpus.topics if t.name == query.strip("#")), None)
        page = _int(request.query.get("page"), 1)
        if topic is None:
            return self._json(render.ai_search_json(self.corpus, query, None, [], page, False))
        cited = sorted(self.corpus.topic_posts[topic.name],
                       key=lambda mid: (-self.corpus.posts[mid].attitudes_count, mid))[:AI_SEARCH_POSTS]
        shown = cited[(page - 1) * AI_PAGE_SIZE : page * AI_PAGE_SIZE] if page >= 1 else []
        has_more = page >= 1 and page * AI_PAGE_SIZE < len(cited)
        return self._json(render.ai_search_json(self.corpus, query, topic.news, shown, page, has_more))

    async def _visitor(self, request: web.Request) -> web.Response:
        return self._html(render.visitor_html(request.query.get("url", "")))

    async def _stats(self, request: web.Request) -> web.Response:
        return self._json(self.stats())


def _check_clock(config: SimulatorConfig, corpus: Corpus) -> None:
    """Search shows times under an hour old as 'N分钟前', which no parser can pin to the minute."""
    latest = max(post.created_at for post in corpus.posts.values())
    if config.now is not None and config.now < latest + timedelta(hours=1):
        raise ValueError(f"SimulatorConfig: now must be at least an hour after the corpus's last post ({latest})")


def _tag_index(corpus: Corpus) -> dict[str, list[str]]:
    """Hashtag -> original posts carrying it, in search order; '' -> every original post."""
    index: dict[str, list[str]] = {"": []}
    for post in corpus.posts.values():
        if post.retweet_of is None:  # search asks for originals (scope=ori)
            index[""].append(post.mid)
            for tag in post.topics:
                index.setdefault(tag, []).append(post.mid)
    return {tag: corpus.search_order(mids) for tag, mids in index.items()}


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _timescope(text: str | None) -> tuple[datetime | None, datetime | None] | None:
    """'custom:2025-10-06-0:2025-10-06-1' -> [start, end) in UTC; (None, None) for no filter; None if invalid."""
    if not text:
        return None, None
    parts = text.removeprefix("custom:").split(":")
    try:
        start, end = (_beijing_hour(part) for part in parts)
    except ValueError:
        return None
    return start, end


def _beijing_hour(text: str) -> datetime:
    pieces = text.split("-")
    if len(pieces) not in (3, 4):
        raise ValueError(text)
    year, month, day = (int(piece) for piece in pieces[:3])
    hour = int(pieces[3]) if len(pieces) == 4 else 0
    return (datetime(year, month, day, tzinfo=BEIJING) + timedelta(hours=hour)).astimezone(timezone.utc)


def _region(text: str | None) -> tuple[int | None, int | None] | None:
    """'custom:11:1000' -> (11, None); 'custom:11:2' -> (11, 2); no filter -> (None, None); None if invalid."""
    if not text:
        return None, None
    parts = text.removeprefix("custom:").split(":")
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    province, city = int(parts[0]), int(parts[1])
    return province, None if city == WHOLE_PROVINCE else city
