"""The crawl stage's config: `socialalign crawl --help` lists every field.

`CrawlConfig` is the one definition of every crawl setting: the driver, the crawl actors and the
task handlers read its fields. The cookie pool reads only `CookiePacing`, the part of it that
travels to the pool's own actor (which must never see a cookie value).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from cluster.config import StrictModel, secret
from cluster.stage_config import StageConfig

HOSTS = ("search", "mobile", "ajax", "ai")
Host = Literal["search", "mobile", "ajax", "ai"]


class RateLimit(StrictModel):
    """A token bucket: `rate` requests per second on average, at most `burst` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(1, ge=1)

    def __init__(self, *args: Any, **fields: Any) -> None:
        # RateLimit(0.2, 1) reads as well as RateLimit(rate=0.2, burst=1); YAML gives the keywords.
        if len(args) > 2:
            raise TypeError(f"RateLimit takes rate and burst, got {len(args)} values")
        super().__init__(**dict(zip(("rate", "burst")[: len(args)], args, strict=True)), **fields)


def default_rates() -> dict[str, RateLimit]:
    """Our pace per cookie and host, below what Weibo tolerates: the community measured ~10 s between
    searches on s.weibo.com and >= 0.5 s between requests on m.weibo.cn (shared WEIBO.md)."""
    return {
        "search": RateLimit(0.1, 1),
        "mobile": RateLimit(2.0, 1),
        "ajax": RateLimit(1.0, 1),
        "ai": RateLimit(0.2, 1),
    }


class WeiboEndpoints(StrictModel):
    """Where each Weibo host is; point them all at the local simulator for demos and tests."""

    search: str = "https://s.weibo.com"
    mobile: str = "https://m.weibo.cn"
    ajax: str = "https://weibo.com"
    ai: str = "https://ai.s.weibo.com"


class CookiePacing(StrictModel):
    """How hard each cookie is used: its rate per host, and how long it rests when Weibo throttles it."""

    rates: dict[Host, RateLimit] = Field(
        default_factory=default_rates, min_length=1, description="per cookie and host: {rate: req/s, burst: n}"
    )
    cooldown_s: float = Field(60.0, gt=0, description="first cooldown of a throttled cookie, on every host")
    cooldown_factor: float = Field(2.0, ge=1, description="each further throttle multiplies the cooldown by this")
    cooldown_max_s: float = Field(1800.0, gt=0, description="the longest cooldown")
    max_pause_s: float = Field(900.0, ge=0, description="wait this long with no usable cookie, then stop")

    @model_validator(mode="after")
    def _cooldowns_in_order(self) -> CookiePacing:
        if self.cooldown_max_s < self.cooldown_s:
            raise ValueError(f"cooldown_max_s must be >= cooldown_s ({self.cooldown_s:g})")
        return self

    def pacing(self) -> CookiePacing:
        """These fields alone (a CrawlConfig is a CookiePacing too, with its secrets beside them)."""
        return CookiePacing(**{name: getattr(self, name) for name in CookiePacing.model_fields})

    def rate_for(self, host: str) -> RateLimit:
        try:
            return self.rates[host]
        except KeyError:
            raise ValueError(f"unknown host class {host!r}: rates has {sorted(self.rates)}") from None

    def cooldown_after(self, failures: int) -> float:
        """The cooldown after `failures` throttles in a row."""
        try:
            raw = self.cooldown_s * self.cooldown_factor ** (failures - 1)
        except OverflowError:
            raw = float("inf")
        return min(self.cooldown_max_s, raw)


_WEIBO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(-\d{1,2})?$")
_UID = re.compile(r"\d{1,20}")


class CrawlConfig(CookiePacing, StageConfig):
    """Stage 1: crawl topics, posts, users and their history from Weibo into Parquet."""

    output_dir: Path = Path("data/crawl")
    keywords: list[str] = Field(
        default_factory=list, description="topics to crawl: '#x#' searches the hashtag x, 'x' the plain keyword x"
    )
    user_ids: list[str] = Field(default_factory=list, description="users to crawl directly (profile, timeline)")
    start: str | None = Field(None, description="search range start, YYYY-MM-DD[-H], Beijing time")
    end: str | None = Field(
        None, description="search range end, Beijing time: YYYY-MM-DD includes that whole day (as weibo-search's "
        "END_DATE), YYYY-MM-DD-H ends where that hour begins (as Weibo's timescope)",
    )
    sources: list[Literal["search", "ai_search"]] = Field(default_factory=lambda: ["search", "ai_search"])
    cookies: SecretStr | None = secret(
        "SOCIALALIGN_WEIBO_COOKIES", description="Weibo cookies, one per line (or use cookies_file)"
    )
    cookies_file: Path | None = Field(None, description="file with one Weibo cookie per line, # comments")
    redis_url: SecretStr | None = secret(
        "SOCIALALIGN_REDIS_URL", description="Redis for the cookie pool and frontier (default: Ray actor + disk)"
    )
    crawl_id: str | None = Field(None, description="names this crawl's state in Redis (default: from output_dir)")
    cookie_namespace: str = Field(
        "socialalign:cookies", min_length=1,
        description="Redis key prefix of the cookie pool (buckets, cooldowns, bans per cookie id); crawls that "
        "share it share each cookie's rate limit, so keep one for every crawl using the same cookies",
    )
    endpoints: WeiboEndpoints = Field(default_factory=WeiboEndpoints)
    num_actors: int = Field(2, ge=1)
    concurrency_per_actor: int = Field(16, ge=1)
    actor_cpus: float = Field(0.5, gt=0, description="logical CPUs reserved per crawl actor")
    actor_scheduling: Literal["DEFAULT", "SPREAD"] = Field(
        "DEFAULT", description="where Ray places the crawl actors: DEFAULT (Ray's choice, often one node) or SPREAD "
        "(over as many nodes as it can; all share one cookie pool and frontier)",
    )
    max_posts_per_user: int = Field(200, ge=1)
    max_pages_per_user: int = Field(40, ge=1)
    history_days: int | None = Field(3650, ge=1, description="keep history from the last N days (None: all)")
    fetch_details: bool = True
    fetch_regions: bool = True
    fetch_long_text: bool = True
    fetch_all_pictures: bool = Field(
        True, description="a timeline post with more than 9 pictures lists 9: fetch its detail page for the rest"
    )
    max_attempts: int = Field(5, ge=1, description="tries of a page that fails (bad body, network, odd status)")
    max_deferrals: int = Field(
        50, ge=1, description="retries of a page refused for reasons not its own (throttled, 5xx, its cookie died)"
    )
    request_timeout_s: float = Field(20.0, gt=0)
    max_response_bytes: int = Field(
        8 << 20, ge=1024, description="a larger response is not read: an error row names the limit, the crawl goes on"
    )
    lease_s: float = Field(
        300.0, gt=0, description="a leased task returns to the queue after this long unless renewed (its worker renews "
        "it while waiting for a cookie); must exceed request_timeout_s + flush_interval_s",
    )
    split_at_pages: int = Field(46, ge=2, le=50, description="re-query finer when a search shows this many pages")
    flush_every_tasks: int = Field(50, ge=1, description="a crawl actor writes its rows after this many tasks")
    flush_interval_s: float = Field(5.0, ge=0, description="... or after this long, whichever comes first")
    idle_poll_s: float = Field(0.2, gt=0, description="how often an idle crawl actor asks for work")

    @field_validator("user_ids")
    @classmethod
    def _numeric_uids(cls, value: list[str]) -> list[str]:
        bad = [uid for uid in value if not _UID.fullmatch(uid)]
        if bad:
            raise ValueError(f"Weibo user ids are 1-20 digits, got {bad[:3]}")
        return value

    @model_validator(mode="after")
    def _lease_covers_a_fetch(self) -> CrawlConfig:
        # After its last renewal a lease must outlast the request and the flush that marks the task done;
        # otherwise another worker takes the task and the same page is fetched twice.
        if self.lease_s <= self.request_timeout_s + self.flush_interval_s:
            raise ValueError(
                f"lease_s ({self.lease_s:g}s) must exceed request_timeout_s ({self.request_timeout_s:g}s) + "
                f"flush_interval_s ({self.flush_interval_s:g}s): a lease must cover a request and the flush after "
                "it, or the same page is fetched twice"
            )
        return self

    @field_validator("start", "end")
    @classmethod
    def _weibo_time(cls, value: str | None) -> str | None:
        if value is not None and not _WEIBO_TIME.match(value):
            raise ValueError("expected YYYY-MM-DD or YYYY-MM-DD-H")
        return value

    def history_since(self, now: datetime) -> datetime | None:
        """The oldest history post to keep, `history_days` before `now`; None keeps all."""
        return None if self.history_days is None else now - timedelta(days=self.history_days)
