"""`socialalign crawl`: seed the frontier, run the crawl actors, show progress, merge the tables.

A crawl is resumable: its frontier (Redis, or a Ray actor journaling to `<output>/_frontier`)
remembers every finished task, and staged rows stay in `<output>/_parts` until merged, so
running the same config again continues where the last run stopped (crash, `ray.kill`, Ctrl-C,
or no usable cookie) without refetching finished pages.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cluster.config import ConfigError
from cluster.metrics import gauge
from cluster.ray_connect import ray_session
from cluster.reports import SUCCESS, write_success
from crawl_actors.config import CrawlConfig
from crawl_actors.cookies import CookieJar, CookiePool
from crawl_actors.crawl_actor import CrawlActor, actor_config
from crawl_actors.output import PartWriter, finalize
from crawl_actors.shared import crawl_namespace, open_cookie_pool, open_frontier
from crawl_actors.tasks import BEIJING, seed_tasks, user_tasks

log = logging.getLogger(__name__)

POLL_S = 0.5
COOKIE_STATE_EVERY = 4  # polls
ACTOR_RESTARTS = 3  # a crawl actor lost (crash, kill, its node) is restarted this often


@dataclass(frozen=True)
class CrawlSummary:
    rows: dict[str, int]
    requests: int
    retries: int
    errors: int
    stop_reason: str | None
    seconds: float
    output_dir: Path

    def report(self) -> dict[str, Any]:
        """What `_SUCCESS.json` keeps of a finished crawl."""
        kept = asdict(self)
        del kept["stop_reason"], kept["output_dir"]
        return {**kept, "seconds": round(self.seconds, 1)}


def run(config: CrawlConfig) -> int:
    """The stage entry point: 0 when every task finished, 1 when it stopped early (run it again to
    resume); a config problem raises ConfigError."""
    summary = crawl(config)
    print(_describe(summary))
    return 0 if summary.stop_reason is None else 1


def crawl(config: CrawlConfig, progress: bool = True) -> CrawlSummary:
    """Crawl as `config` says; returns what was kept (always merged, even on an early stop). A crawl
    that finished every task leaves its summary in `<output_dir>/_SUCCESS.json`."""
    queries = search_queries(config.keywords)
    if not queries and not config.user_ids:
        raise ConfigError("keywords: give at least one topic to crawl (or user_ids)")
    jar = load_cookies(config)
    start, end = _time_range(config)
    config = config.model_copy(update={"output_dir": config.output_dir.resolve()})
    (config.output_dir / SUCCESS).unlink(missing_ok=True)  # from an earlier run: this one has not finished
    began = time.monotonic()
    with ray_session(config.ray):
        reports, stop_reason = _crawl_on_ray(config, jar, queries, start, end, progress)
    summary = _summarize(config.output_dir, reports, stop_reason, time.monotonic() - began)
    if stop_reason is None:
        write_success(config.output_dir, "crawl", summary.report())
    return summary


def load_cookies(config: CrawlConfig) -> CookieJar:
    """Cookies from the `cookies` secret (env SOCIALALIGN_WEIBO_COOKIES) and/or `cookies_file`."""
    text = config.cookies.get_secret_value() if config.cookies else ""
    if config.cookies_file is not None:
        try:
            text += "\n" + config.cookies_file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cookies_file: cannot read {config.cookies_file} ({error.strerror})") from None
    jar = CookieJar.from_lines(text)
    if not len(jar):
        raise ConfigError(
            "cookies: no Weibo cookie given; set SOCIALALIGN_WEIBO_COOKIES or cookies_file (one cookie per line)"
        )
    return jar


def _crawl_on_ray(config: CrawlConfig, jar: CookieJar, queries: list[tuple[str, bool]], start: datetime | None,
                  end: datetime | None, progress: bool) -> tuple[list[dict[str, Any]], str | None]:
    namespace = crawl_namespace(config)
    pool = open_cookie_pool(config, jar.ids, namespace)
    frontier = open_frontier(config, namespace)
    recovered = _call(frontier, "recover")
    if recovered:
        log.info("resuming: %d tasks that were in flight go back to the queue", recovered)
    _seed(frontier, config, queries, start, end)
    return _run_workers(config, jar, pool, frontier, namespace, progress)


def _summarize(output_dir: Path, reports: list[dict[str, Any]], stop_reason: str | None,
               seconds: float) -> CrawlSummary:
    counts = finalize(output_dir)
    for part in counts.skipped_parts:
        log.error("unreadable staging part left out of the tables: %s", part)
    return CrawlSummary(
        rows=counts.rows,
        requests=sum(r["requests"] for r in reports),
        retries=sum(r["retries"] for r in reports),
        errors=sum(r["errors"] for r in reports),
        stop_reason=stop_reason,
        seconds=seconds,
        output_dir=output_dir,
    )


def search_queries(keywords: list[str]) -> list[tuple[str, bool]]:
    """(topic, is a hashtag) for each configured keyword: '#x#' (or '#x') is the hashtag x, searched as
    '#x#'; anything else is a plain keyword, searched as typed. Blank entries are dropped."""
    queries = []
    for keyword in keywords:
        shown = keyword.strip()
        hashtag = shown.startswith("#")
        topic = shown.strip("#").strip() if hashtag else shown
        if topic:
            queries.append((topic, hashtag))
    return list(dict.fromkeys(queries))


def _seed(frontier: Any, config: CrawlConfig, queries: list[tuple[str, bool]], start: datetime | None,
          end: datetime | None) -> None:
    tasks = [task for topic, hashtag in queries for task in seed_tasks(topic, start, end, config.sources, hashtag)]
    tasks += [task for uid in config.user_ids for task in user_tasks(uid, config)]
    topics = list(dict.fromkeys(topic for topic, _ in queries))
    added = _call(frontier, "add", tasks)
    if added and topics:
        # The topics themselves, for a crawl without AI search (which also brings the news text).
        writer = PartWriter(config.output_dir, "seed")
        writer.add("topics", [{"topic": topic, "news": None, "source": "config"} for topic in topics])
        writer.flush()
    log.info("frontier seeded: %d new tasks for %d topics and %d users", added, len(topics), len(config.user_ids))


def _run_workers(config: CrawlConfig, jar: CookieJar, pool: CookiePool, frontier: Any, namespace: str,
                 progress: bool) -> tuple[list[dict[str, Any]], str | None]:
    import ray

    workers = _start_workers(config, jar, namespace)
    refs = [worker.run.remote() for worker in workers]
    stop_reason = None
    try:
        _wait_showing_progress(refs, workers, pool, frontier, progress)
    except KeyboardInterrupt:
        stop_reason = "interrupted (Ctrl-C)"
        print("\nstopping: letting the crawl actors flush what they hold...", file=sys.stderr)
        ray.get([worker.stop.remote(stop_reason) for worker in workers])
    reports = _reports(workers, refs)
    stop_reason = stop_reason or next((r["stop_reason"] for r in reports if r["stop_reason"]), None)
    if stop_reason is None and not _call(frontier, "counts").drained:
        stop_reason = "the crawl actors stopped with tasks left"
    return reports, stop_reason


def _reports(workers: list[Any], refs: list[Any], reruns: int = ACTOR_RESTARTS) -> list[dict[str, Any]]:
    """Each actor's final report. An actor whose node was lost fails its `run` call with
    ActorUnavailableError ("may or may not have executed"), which Ray does not retry: call `run` again on
    the restarted actor (its constructor ran again; the tasks it held return to the frontier when their
    lease ends), so the crawl goes on instead of failing."""
    import ray

    reports: list[dict[str, Any]] = []
    for index, (worker, ref) in enumerate(zip(workers, refs)):
        for attempt in range(reruns + 1):
            try:
                reports.append(ray.get(ref))
                break
            except ray.exceptions.RayActorError as error:
                if attempt == reruns:
                    raise
                log.warning("crawl actor %d was lost (%s); running it again on its restarted actor", index,
                            type(error).__name__)
                ref = worker.run.remote()
    return reports


def _start_workers(config: CrawlConfig, jar: CookieJar, namespace: str) -> list[Any]:
    """The crawl actors, each restartable: Ray runs the constructor again, with the same plain arguments."""
    import ray

    remote = ray.remote(CrawlActor)
    settings = actor_config(config)
    return [
        remote.options(
            name=f"{namespace}:crawler-{i}", num_cpus=config.actor_cpus, max_restarts=ACTOR_RESTARTS,
            max_task_retries=ACTOR_RESTARTS,
            max_concurrency=1000, scheduling_strategy=config.actor_scheduling,
        ).remote(f"crawler-{i}", settings, jar, namespace)
        for i in range(config.num_actors)
    ]


def _wait_showing_progress(refs: list[Any], workers: list[Any], pool: CookiePool, frontier: Any,
                           progress: bool) -> None:
    import ray

    bar = _progress_bar(progress)
    polls = 0
    try:
        while True:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
            _show(bar, frontier, workers)
            polls += 1
            finished = len(ready) == len(refs)
            if finished or polls % COOKIE_STATE_EVERY == 0:
                _export_cookie_states(pool)
            if finished:
                return
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=0, unit="page", desc="crawl", dynamic_ncols=True)


def _show(bar: Any, frontier: Any, workers: list[Any]) -> None:
    import ray

    counts = _call(frontier, "counts")
    for state in ("pending", "leased", "done"):
        gauge("crawl_frontier_tasks", getattr(counts, state), state=state)
    if bar is None:
        return
    try:
        reports = ray.get([worker.report.remote() for worker in workers], timeout=5)
    except Exception:  # a restarting actor must not break the progress display
        return
    rows: dict[str, int] = {}
    for report in reports:
        for table, n in report["rows"].items():
            rows[table] = rows.get(table, 0) + n
    bar.total = counts.seen
    bar.n = counts.done
    bar.set_postfix(
        posts=rows.get("posts", 0), users=rows.get("users", 0), history=rows.get("history", 0),
        bans=sum(r["expired_reports"] for r in reports), throttled=sum(r["throttled"] for r in reports),
        errors=sum(r["errors"] for r in reports), refresh=False,
    )
    bar.refresh()


def _export_cookie_states(pool: Any) -> None:
    """One gauge per cookie (by its hash) and state, for the dashboard."""
    try:
        statuses = _call(copy.copy(pool), "status")  # a fresh client: each asyncio.run has its own loop
    except Exception as error:  # the display must never stop the crawl
        log.debug("cookie states unavailable: %s", error)
        return
    for status in statuses:
        for state in ("ok", "cooling", "dead"):
            gauge("crawl_cookie_state", 1.0 if status.state == state else 0.0, cookie=status.cookie_id, state=state)


def _call(frontier: Any, method: str, *args: Any) -> Any:
    """Run one async frontier call from the (synchronous) driver."""

    async def once() -> Any:
        try:
            return await getattr(frontier, method)(*args)
        finally:
            close = getattr(frontier, "close", None) or getattr(frontier, "aclose", None)
            if close is not None:
                await close()

    return asyncio.run(once())


def _time_range(config: CrawlConfig) -> tuple[datetime | None, datetime | None]:
    if "search" not in config.sources:
        return None, None
    if config.start is None or config.end is None:
        raise ConfigError("start, end: searching needs a time range (YYYY-MM-DD[-H], Beijing time)")
    return search_range(config.start, config.end)


def search_range(start: str, end: str) -> tuple[datetime, datetime]:
    """[from, until) of a configured range, Beijing time. A day names the whole day: `start` 2025-10-06
    is its first moment, `end` 2025-10-08 its last (inclusive, as weibo-search's START_DATE/END_DATE). An
    hour names the moment it begins: `end` 2025-10-08-20 stops there (exclusive, as Weibo's own timescope
    custom:2025-10-06-0:2025-10-08-20)."""
    since, until = _weibo_time(start), _weibo_time(end)
    if len(end) == len("YYYY-MM-DD"):
        until += timedelta(days=1)
    if until <= since:
        raise ConfigError(f"end: {end} is not after start {start} (a day is inclusive, an hour exclusive)")
    return since, until


def _weibo_time(text: str) -> datetime:
    day, hour = text[:10], text[11:]
    try:
        moment = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=BEIJING)
    except ValueError as error:
        raise ConfigError(f"start, end: {text!r} is not a date ({error})") from None
    return moment + timedelta(hours=int(hour)) if hour else moment


def _describe(summary: CrawlSummary) -> str:
    rows = ", ".join(f"{name} {count}" for name, count in summary.rows.items())
    state = "finished" if summary.stop_reason is None else f"stopped early: {summary.stop_reason} (run again to resume)"
    return (
        f"crawl {state} in {summary.seconds:.1f}s: {summary.requests} requests, {summary.retries} retries, "
        f"{summary.errors} errors\n  tables ({rows}) in {summary.output_dir}"
    )
