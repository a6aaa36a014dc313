"""The simulator's one config: corpus size, clock, per-cookie rate limits, faults, address."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from crawl_actors.config import HOSTS, RateLimit

FAULT_KINDS = ("malformed_html", "malformed_json", "http_500", "http_502", "http_503", "slow", "truncated")
LAYOUTS = ("current", "2020")
TIMELINE_PAGING = ("since_id", "page")


def weibo_limits() -> dict[str, RateLimit]:
    """Weibo's own limits per cookie, as the simulator enforces them: the community-measured paces
    (shared WEIBO.md §4: ~5-15 s on s.weibo.com, >= 0.5 s on m.weibo.cn). A different table from the
    crawl's `default_rates()` on purpose: those are our pacing, kept below these."""
    return {
        "search": RateLimit(0.2, 1),
        "mobile": RateLimit(2.0, 2),
        "ajax": RateLimit(2.0, 2),
        "ai": RateLimit(0.5, 1),
    }


def unlimited_rates() -> dict[str, RateLimit]:
    """Rates no test client reaches: for round-trip tests that are not about throttling."""
    return {name: RateLimit(100_000.0, 100_000) for name in HOSTS}


@dataclass
class SimulatorConfig:
    seed: int = 0
    num_topics: int = 3  # the first is the hot topic
    num_users: int = 100
    history_posts: tuple[int, int] = (10, 300)  # timeline posts per user, besides their topic posts
    # Half of the hot topic falls in one hour, 88% of that in Beijing: from ~1140 posts on, a crawl must
    # slice range -> day -> hour -> province -> city to see them all. No (hour, city) slice may pass 300.
    hot_topic_posts: int = 1200
    topic_posts: int = 150  # each other topic
    search_layout: str = "current"  # current | 2020
    timeline_paging: str = "since_id"  # since_id (newer responses) | page (page numbers and total, 2019-2021)
    now: datetime | None = None  # the simulator's clock (frozen); None: the real time, moving
    rates: dict[str, RateLimit] = field(default_factory=weibo_limits)
    flood_rps: float = 10.0  # a violating cookie above this many requests/s gets 414 instead of 418
    # The limiter's bucket per cookie and host holds burst + rate x jitter_s tokens: jitter_s seconds of
    # slack for network and server-side queueing jitter (a request granted on time may arrive late, then
    # land right behind the next one), so a client that keeps to (rate, burst) is never counted as a
    # violator, while one that sends even a fraction of a token more than that is.
    jitter_s: float = 0.1
    cookies: tuple[str, ...] = ()  # accepted cookies besides those made by new_cookies()
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_delay_s: float = 3.0  # how slow a "slow" fault is
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port

    def __post_init__(self) -> None:
        low, high = self.history_posts
        checks = [
            (self.num_topics >= 1, "num_topics must be >= 1"),
            (self.num_users >= 2, "num_users must be >= 2"),
            (0 <= low <= high, "history_posts must be (low, high) with 0 <= low <= high"),
            (self.hot_topic_posts >= 1 and self.topic_posts >= 1, "topic post counts must be >= 1"),
            (self.search_layout in LAYOUTS, f"search_layout must be one of {LAYOUTS}"),
            (self.timeline_paging in TIMELINE_PAGING, f"timeline_paging must be one of {TIMELINE_PAGING}"),
            (set(self.rates) == set(HOSTS), f"rates must name exactly {HOSTS}"),
            (self.flood_rps > 0, "flood_rps must be > 0"),
            (self.jitter_s >= 0, "jitter_s must be >= 0"),
            (0.0 <= self.fault_rate <= 1.0, "fault_rate must be in [0, 1]"),
            (set(self.fault_kinds) <= set(FAULT_KINDS), f"fault_kinds must be among {FAULT_KINDS}"),
            (self.fault_delay_s >= 0, "fault_delay_s must be >= 0"),
            (0 <= self.port <= 65535, "port must be in 0..65535"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SimulatorConfig: {message}")
        if self.now is not None and self.now.tzinfo is None:
            self.now = self.now.replace(tzinfo=timezone.utc)
