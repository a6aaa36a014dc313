"""The crawl stage's config: `socialalign crawl --help` lists every field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from cluster.config import StrictModel, secret
from cluster.stage_config import StageConfig

class RateLimit(StrictModel):
    """A token bucket: `rate` requests per second on average, at most `burst` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(1, ge=1)


class WeiboEndpoints(StrictModel):
    """Where each Weibo host is; point them all at the local simulator for demos and tests."""

    search: str = "https://s.weibo.com"
    mobile: str = "https://m.weibo.cn"
    ajax: str = "https://weibo.com"
    ai: str = "https://ai.s.weibo.com"


_WEIBO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(-\d{1,2})?$")


def _default_rates() -> dict[str, RateLimit]:
    # Community-measured safe paces per cookie (WEIBO.md): ~10 s on s.weibo.com, >= 0.5 s on m.weibo.cn.
    return {
        "search": RateLimit(rate=0.1, burst=1),
        "mobile": RateLimit(rate=2.0, burst=1),
        "ajax": RateLimit(rate=1.0, burst=1),
        "ai": RateLimit(rate=0.2, burst=1),
    }


class CrawlConfig(StageConfig):
    """Stage 1: crawl topics, posts, users and their history from Weibo into Parquet."""

    output_dir: Path = Path("data/crawl")
    keywords: list[str] = Field(
        default_factory=list, description="topics to crawl: '#x#' searches the hashtag x, 'x' the plain keyword x"
    )
    user_ids: list[str] = Field(default_factory=list, description="users to crawl directly (profile, timeline)")
    start: str | None = Field(None, description="search range start, YYYY-MM-DD[-H], Beijing time")
    end: str | None = Field(None, description="search range end (exclusive), YYYY-MM-DD[-H], Beijing time")
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
    rates: dict[Literal["search", "mobile", "ajax", "ai"], RateLimit] = Field(
        default_factory=_default_rates, description="per cookie and host: {rate: req/s, burst: n}"
    )
    cooldown_s: float = Field(60.0, gt=0, description="first cooldown of a throttled cookie (doubles each time)")
    cooldown_max_s: float = Field(1800.0, gt=0)
    max_pause_s: float = Field(900.0, gt=0, description="wait this long with no usable cookie, then stop")
    num_actors: int = Field(2, ge=1)
    concurrency_per_actor: int = Field(16, ge=1)
    actor_cpus: float = Field(0.5, gt=0, description="logical CPUs reserved per crawl actor")
    max_posts_per_user: int = Field(200, ge=1)
    max_pages_per_user: int = Field(40, ge=1)
    history_days: int | None = Field(3650, ge=1, description="keep history from the last N days (None: all)")
    fetch_details: bool = True
    fetch_regions: bool = True
    fetch_long_text: bool = True
    max_attempts: int = Field(5, ge=1, description="tries of a page that fails (5xx, bad body, network)")
    request_timeout_s: float = Field(20.0, gt=0)
    lease_s: float = Field(300.0, gt=0, description="a leased task returns to the queue after this long")
    split_at_pages: int = Field(46, ge=2, le=50, description="re-query finer when a search shows this many pages")

    @field_validator("start", "end")
    @classmethod
    def _weibo_time(cls, value: str | None) -> str | None:
        if value is not None and not _WEIBO_TIME.match(value):
            raise ValueError("expected YYYY-MM-DD or YYYY-MM-DD-H")
        return value
