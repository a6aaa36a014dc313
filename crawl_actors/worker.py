"""A crawl worker: many concurrent aiohttp requests in one Ray actor, through the shared cookie pool.

Each of its `concurrency_per_actor` loops leases a task, waits for a cookie with capacity on the
task's host (renewing the task's lease meanwhile, so that no other worker takes it), fetches at most
`max_response_bytes`, parses the body in a thread (a slow parse never stalls the other requests),
reports the cookie's outcome, stages the rows and queues the tasks the page leads to. Rows are
flushed to a part file (renamed into place and its directory fsynced) before their tasks are marked
done; a flusher flushes every `flush_interval_s` even while every loop waits for a cookie.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from cluster.metrics import count
from crawl_actors import parsers
from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import CookieJar, NoUsableCookie
from crawl_actors.frontier import Task
from crawl_actors.output import PartWriter
from crawl_actors.tasks import HOST_OF, BadTask, TaskResult, handle, request_for

log = logging.getLogger(__name__)

SNIPPET_CHARS = 200
THROTTLED = {418, 414}
EXPIRED = {401, 403, 432}
NOT_FOUND = {404, 410}


@dataclass
class WorkerStats:
    requests: int = 0
    tasks_done: int = 0
    retries: int = 0
    throttled: int = 0
    expired_reports: int = 0
    errors: int = 0
    rows: Counter = field(default_factory=Counter)
    status: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Outcome:
    """How a fetch went: what to tell the cookie pool and what to do with the task."""

    cookie: str | None  # "ok" | "throttled" | "expired" | None (not the cookie's business)
    # "done" | "retry" (the page's fault: counts an attempt) | "defer" (not its fault: counts a deferral)
    # | "give_up"
    action: str
    result: TaskResult | None = None
    error_kind: str | None = None
    message: str = ""
    snippet: str = ""
    status: int | None = None  # the HTTP status; None when no response came


class StopCrawl(Exception):
    """No cookie can be used any more; the worker stops and keeps what it has."""


class TooLarge(Exception):
    """A response body over `max_response_bytes`."""


class CrawlWorker:
    """Crawls with the `pool` and `frontier` it is given (the crawl's shared ones, or test stand-ins)."""

    def __init__(self, worker_id: str, config: CrawlConfig, jar: CookieJar, pool: Any, frontier: Any) -> None:
        self.worker_id = worker_id
        self.config = config
        self.jar = jar
        self.pool = pool
        self.frontier = frontier
        self.stats = WorkerStats()
        self.writer = PartWriter(config.output_dir, worker_id)
        self.unflushed: list[str] = []
        self.last_flush = time.monotonic()
        self.stopping: asyncio.Event | None = None
        self.stop_reason: str | None = None
        self.busy = 0
        self._flush_lock: asyncio.Lock | None = None

    async def run(self) -> dict[str, Any]:
        """Crawl until the frontier is drained, `stop()` is called, or no cookie is usable."""
        import aiohttp

        self.stopping = asyncio.Event()
        if self.stop_reason is not None:
            self.stopping.set()
        self._flush_lock = asyncio.Lock()
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s)
        connector = aiohttp.TCPConnector(limit=self.config.concurrency_per_actor)
        ignore_set_cookie = aiohttp.DummyCookieJar()  # the Cookie header is the pool's: never keep what Weibo sets
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, cookie_jar=ignore_set_cookie) as session:
            loops = [asyncio.create_task(self._loop(session)) for _ in range(self.config.concurrency_per_actor)]
            flusher = asyncio.create_task(self._flusher())
            try:
                await asyncio.gather(*loops)
            finally:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)
        async with self._flush_lock:  # a flush the cancel caught half-way (shielded) finishes first
            pass
        await self._flush(force=True)
        return self.report()

    async def stop(self, reason: str = "stopped") -> None:
        self.stop_reason = self.stop_reason or reason
        if self.stopping is not None:
            self.stopping.set()

    def report(self) -> dict[str, Any]:
        s = self.stats
        return {
            "worker": self.worker_id,
            "pid": os.getpid(),
            "requests": s.requests,
            "tasks_done": s.tasks_done,
            "retries": s.retries,
            "throttled": s.throttled,
            "expired_reports": s.expired_reports,
            "errors": s.errors,
            "rows": dict(s.rows),
            "status": {str(k): v for k, v in s.status.items()},
            "stop_reason": self.stop_reason,
        }

    async def _loop(self, session: Any) -> None:
        while not self.stopping.is_set():
            tasks = await self.frontier.lease(1, self.config.lease_s)
            if not tasks:
                if await self._finished():
                    return
                await self._wait(self.config.idle_poll_s)
                continue
            self.busy += 1
            try:
                await self._process(session, tasks[0])
            except StopCrawl as stop:
                await self.stop(str(stop))
            finally:
                self.busy -= 1
            await self._flush()

    async def _flusher(self) -> None:
        """Flush on time even when every loop waits for a cookie: a finished task's lease must not run
        out before its rows are written and it is marked done (or another worker would fetch it again)."""
        every = max(self.config.flush_interval_s, self.config.idle_poll_s)
        while not self.stopping.is_set():
            await self._wait(every)
            # Shielded: when the crawl stops mid-flush, the flush still marks its tasks done.
            await asyncio.shield(self._flush())

    async def _finished(self) -> bool:
        """Nothing to lease: flush what this worker holds; done when no task is pending or leased anywhere."""
        if self.busy:
            return False
        await self._flush(force=True)
        return (await self.frontier.counts()).drained

    async def _process(self, session: Any, task: Task) -> None:
        host = HOST_OF[task.kind]
        now = datetime.now(timezone.utc)
        try:
            url, headers = request_for(task, self.config.endpoints, now)
        except BadTask as error:  # an id that must not go into a URL: an error row, never a request
            self._error_row(task, "", "bad_id", None, "", str(error))
            self.unflushed.append(task.id)
            self.stats.tasks_done += 1
            return
        cookie_id = await self._cookie_for(task, host)
        if cookie_id is None:
            return  # the lease was lost while waiting: the task is someone else's now
        outcome = await self._fetch(session, task, url, {**headers, "Cookie": self.jar.header(cookie_id)})
        if outcome.cookie is not None:
            await self.pool.report(cookie_id, host, outcome.cookie)
            if outcome.cookie != "ok":
                count("crawl_bans", cookie=cookie_id, outcome=outcome.cookie)
            self.stats.throttled += outcome.cookie == "throttled"
            self.stats.expired_reports += outcome.cookie == "expired"
        await self._settle(task, url, outcome)

    async def _cookie_for(self, task: Task, host: str) -> str | None:
        """A cookie for `host`, keeping the task's lease alive while the pool makes us wait (up to
        `max_pause_s`, far longer than a lease): every lease_s/3 the lease is renewed, and once a cookie
        is granted after such a wait the lease is renewed in full, so that it covers the request and the
        flush after it. None when the lease was lost anyway (the task went back to the queue)."""
        lease_s = self.config.lease_s
        waiting = asyncio.ensure_future(self.pool.acquire_wait(host))
        renewed = False
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=lease_s / 3)
                if done:
                    break
                renewed = True
                if not await self.frontier.renew(task, lease_s):
                    log.warning("lease of %s lost while waiting for a cookie; leaving it to its new holder", task.id)
                    return None
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        try:
            cookie_id = waiting.result()
        except NoUsableCookie as error:
            await self.frontier.retry(task, counted=False)  # not this task's fault; it stays for a resumed crawl
            raise StopCrawl(error.reason) from error
        if renewed and not await self.frontier.renew(task, lease_s):
            return None
        return cookie_id

    async def _fetch(self, session: Any, task: Task, url: str, headers: dict[str, str]) -> Outcome:
        import aiohttp

        self.stats.requests += 1
        limit = self.config.max_response_bytes
        try:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                status = response.status
                location = response.headers.get("Location", "")
                served_at = served_time(response.headers.get("Date"))
                charset = response.charset or "utf-8"
                raw = await _read_capped(response, limit)
        except TooLarge as error:
            self.stats.status["too_large"] += 1
            count("crawl_requests", host=HOST_OF[task.kind], status="too_large")
            return Outcome("ok", "give_up", error_kind="too_large", message=str(error), status=status)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            self.stats.status["network"] += 1
            count("crawl_requests", host=HOST_OF[task.kind], status="network")
            return Outcome(None, "retry", error_kind="network", message=f"{type(error).__name__}: {error}")
        body = _decode(raw, charset)
        self.stats.status[status] += 1
        count("crawl_requests", host=HOST_OF[task.kind], status=str(status))
        outcome = replace(await self._classify(task, url, status, location, body, served_at), status=status)
        return outcome if outcome.action == "done" else replace(outcome, snippet=body[:SNIPPET_CHARS])

    async def _classify(self, task: Task, url: str, status: int, location: str, body: str, now: datetime) -> Outcome:
        """What an answer means; `now` is when it was served (relative times count from it). The body is
        parsed in a thread: a large or pathological page must not stall this actor's other requests."""
        if status in (301, 302, 303, 307) and ("visitor" in location or "passport" in location):
            return Outcome("expired", "defer", error_kind="blocked", message=f"redirected to {location}")
        if status in THROTTLED or status >= 500:
            return Outcome("throttled", "defer", error_kind="http", message=f"HTTP {status}")
        if status in EXPIRED:
            return Outcome("expired", "defer", error_kind="blocked", message=f"HTTP {status}: {body[:80]}")
        if status in NOT_FOUND:
            return Outcome("ok", "give_up", error_kind="http", message=f"HTTP {status}")
        if status != 200:
            return Outcome(None, "retry", error_kind="http", message=f"HTTP {status}")
        try:
            result = await asyncio.to_thread(handle, task, body, url, now, self.config)
        except parsers.Blocked as blocked:
            if blocked.reason == "rate_limited":
                return Outcome("throttled", "defer", error_kind="http", message="rate limited (page says so)")
            return Outcome("expired", "defer", error_kind="blocked", message=blocked.reason)
        except parsers.ParseError as error:
            return Outcome("ok", "retry", error_kind="parse", message=str(error))
        except Exception as error:  # a page that trips a bug: an error row and a retry, never a dead crawl
            log.warning("unexpected %s handling %s task %s", type(error).__name__, task.kind, url, exc_info=True)
            return Outcome("ok", "retry", error_kind="parse", message=f"unexpected {type(error).__name__}: {error}")
        return Outcome("ok", "done", result=result)

    async def _settle(self, task: Task, url: str, outcome: Outcome) -> None:
        if outcome.action == "done":
            await self._accept(task, outcome.result)
            return
        # Retries that are not the page's fault (throttled, 5xx, its cookie died) are deferrals, not
        # attempts: a throttled crawl must not give up pages. Their own, far larger bound stops a page
        # that always answers 5xx; running out of cookies stops the crawl instead (resumable).
        counted = outcome.action != "defer"
        if counted:
            final = outcome.action == "give_up" or task.attempts + 1 >= self.config.max_attempts
        else:
            final = task.deferrals + 1 >= self.config.max_deferrals
        self._error(task, url, outcome, final)
        if final:
            self.unflushed.append(task.id)
            self.stats.tasks_done += 1
            return
        self.stats.retries += 1
        count("crawl_retries", kind=task.kind)
        await self.frontier.retry(task, counted)

    async def _accept(self, task: Task, result: TaskResult) -> None:
        count("crawl_pages", kind=task.kind)
        for table, rows in result.rows.items():
            self.writer.add(table, rows)
            self.stats.rows[table] += len(rows)
            count("crawl_rows", len(rows), table=table)
        for problem in result.partial_errors:
            url, snippet = getattr(problem, "url", ""), getattr(problem, "snippet", "")
            self._error_row(task, url, "parse", None, snippet, str(problem))
        if result.children:
            await self.frontier.add(result.children)
        self.unflushed.append(task.id)
        self.stats.tasks_done += 1

    def _error(self, task: Task, url: str, outcome: Outcome, final: bool) -> None:
        kind = "gave_up" if final and outcome.action != "give_up" else outcome.error_kind or "http"
        if outcome.action == "defer":
            tries = f"{task.deferrals + 1} deferrals (throttled or blocked)"
        else:
            tries = f"{task.attempts + 1} attempts"
        note = f" after {tries}" if final else f" ({tries}, retrying)"
        self._error_row(task, url, kind, outcome.status, outcome.snippet, outcome.message + note)

    def _error_row(self, task: Task, url: str, kind: str, status: int | None, snippet: str, message: str) -> None:
        self.stats.errors += 1
        count("crawl_errors", kind=kind)
        self.writer.add("errors", [{
            "url": url, "task": task.kind, "kind": kind, "status": status,
            "snippet": (snippet or "")[:SNIPPET_CHARS], "message": message,
            "time": datetime.now(timezone.utc),
        }])

    async def _flush(self, force: bool = False) -> None:
        due = len(self.unflushed) >= self.config.flush_every_tasks or (
            time.monotonic() - self.last_flush >= self.config.flush_interval_s
        )
        if not (force or due) or (not self.unflushed and not self.writer.buffered):
            return
        async with self._flush_lock:
            # Taken together, with no await in between: these rows are exactly those of these tasks.
            done, self.unflushed = self.unflushed, []
            batch = self.writer.take()
            if batch:
                await asyncio.to_thread(self.writer.flush, batch)
            await self.frontier.complete(done)
            self.last_flush = time.monotonic()

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


async def _read_capped(response: Any, limit: int) -> bytes:
    """The whole body, or TooLarge as soon as it passes `limit` bytes (announced or counted)."""
    announced = response.content_length
    if announced is not None and announced > limit:
        raise TooLarge(f"response of {announced} bytes is over max_response_bytes={limit}")
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"response passed max_response_bytes={limit} (cut off at {size} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def served_time(date_header: str | None) -> datetime:
    """When the page was served, from its Date header (the server's clock, which relative times like
    '5分钟前' count from); the local clock when the header is missing or unreadable."""
    if date_header:
        try:
            served = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            served = None
        if served is not None:
            return served.replace(tzinfo=timezone.utc) if served.tzinfo is None else served.astimezone(timezone.utc)
    return datetime.now(timezone.utc)
