"""Crawl throughput against the local Weibo simulator, and parser speed, each next to its baseline.

1. Ours: 8 cookies x R requests/s each on m.weibo.cn (profiles, details, timelines, long texts of
   every simulated user) with 5% injected faults, through the Ray crawl actors and the cookie pool.
   Throughput = requests the simulator served / the time between its first and last request;
   ceiling_fraction = throughput / (8 R). The simulator counts every rate-limit violation.
2. Baseline, the research crawler's way: one cookie, one request at a time, a fixed sleep of 1/R
   between requests, skipping what fails; same simulator, same per-cookie rate, same faults.
3. Parsers: the same s.weibo.com search pages parsed by our selectolax parser and by a parsel/lxml
   XPath parser extracting the same fields with the same post-processing (the research crawler's
   approach); `parse_agreement` is the share of cards on which both give identical records.

Targets: ceiling_fraction >= 0.9 with violations == 0; parse_speedup >= 3.
Last line: one JSON object of the figures, ratios first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from cluster.stage_config import RayConfig  # noqa: E402
from crawl_actors import parsers  # noqa: E402
from crawl_actors.config import CrawlConfig  # noqa: E402
from crawl_actors.job import crawl  # noqa: E402
from crawl_actors.simulator import RateLimit, SimulatorConfig, WeiboSimulator, unlimited_rates  # noqa: E402
from crawl_actors.tasks import BROWSER_UA  # noqa: E402

COOKIES = 8
# What `ours` sets besides the rates: printed in the figures' `setup`, so the figure says how it was got.
# The short cooldowns suit the simulator, whose throttling comes only from its injected 5xx faults.
OURS_SETTINGS = {
    "cooldown_s": 0.1, "cooldown_max_s": 1.0, "max_pause_s": 900.0, "num_actors": 2, "concurrency_per_actor": 16,
    "request_timeout_s": 5.0, "history_days": None, "max_posts_per_user": 1000, "max_pages_per_user": 100,
}
FAULT_RATE, FAULT_DELAY_S = 0.05, 0.5


class RequestClock:
    """Samples the simulator's request count to find when the first and the last request came."""

    def __init__(self, sim: WeiboSimulator) -> None:
        self.sim = sim
        self.start_count = sim.stats()["requests"]
        self.first = self.last = None
        self.count = self.start_count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> RequestClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def _sample(self) -> None:
        now, count = time.perf_counter(), self.sim.stats()["requests"]
        if count != self.count:
            self.first = self.first or now
            self.last, self.count = now, count

    @property
    def requests(self) -> int:
        return self.count - self.start_count

    @property
    def rps(self) -> float:
        return self.requests / (self.last - self.first) if self.first and self.last and self.last > self.first else 0.0


def simulator_config(rate: float, users: int, fault_rate: float) -> SimulatorConfig:
    rates = {host: RateLimit(rate, 1) for host in ("search", "mobile", "ajax", "ai")}
    return SimulatorConfig(seed=11, num_users=users, history_posts=(30, 70), hot_topic_posts=60, topic_posts=30,
                           rates=rates, fault_rate=fault_rate, fault_delay_s=FAULT_DELAY_S)


def ours(sim: WeiboSimulator, rate: float, user_ids: list[str], workdir: Path) -> dict[str, float]:
    config = CrawlConfig(
        keywords=[], user_ids=user_ids, sources=[], cookies=SecretStr("\n".join(sim.new_cookies(COOKIES))),
        endpoints={host: sim.base_url for host in ("search", "mobile", "ajax", "ai")},
        rates={host: {"rate": rate, "burst": 1} for host in ("search", "mobile", "ajax", "ai")},
        output_dir=workdir / "ours", ray=RayConfig(include_dashboard=False), **OURS_SETTINGS,
    )
    violations = sim.stats()["violations"]
    with RequestClock(sim) as clock:
        summary = crawl(config, progress=False)
    return {
        "rps": clock.rps, "requests": clock.requests, "history_rows": summary.rows.get("history", 0),
        "violations": sim.stats()["violations"] - violations, "retries": summary.retries,
    }


def research_baseline(sim: WeiboSimulator, rate: float, user_ids: list[str]) -> dict[str, float]:
    """One cookie, sequential, fixed sleep between requests, skip on error (as the research crawler)."""
    cookie = sim.new_cookies(1)[0]
    headers = {"User-Agent": BROWSER_UA, "Cookie": cookie, "Referer": f"{sim.base_url}/",
               "X-Requested-With": "XMLHttpRequest"}
    violations = sim.stats()["violations"]
    posts = 0

    def get(url: str) -> str | None:
        time.sleep(1.0 / rate)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
                return response.read().decode("utf-8", "replace")
        except Exception:  # the research crawler skips what fails
            return None

    with RequestClock(sim) as clock:
        for uid in user_ids:
            get(f"{sim.base_url}/api/container/getIndex?containerid=100505{uid}")
            get(f"{sim.base_url}/api/container/getIndex?containerid=230283{uid}_-_INFO")
            for page in range(1, 101):
                body = get(f"{sim.base_url}/api/container/getIndex?containerid=107603{uid}&page={page}")
                try:
                    timeline = parsers.parse_timeline(body or "", "baseline", datetime.now(timezone.utc))
                except (parsers.ParseError, parsers.Blocked):
                    break
                posts += len(timeline.posts)
                for mid in timeline.needs_long_text:
                    get(f"{sim.base_url}/statuses/extend?id={mid}")
                if timeline.end:
                    break
    return {"rps": clock.rps, "requests": clock.requests, "history_rows": posts,
            "violations": sim.stats()["violations"] - violations}


_XPATH_BADGES = {"woo_svg_vblue": "蓝V", "woo_svg_vyellow": "黄V", "woo_svg_vorange": "红V", "woo_svg_vgold": "金V"}


def xpath_search_page(html: str, url: str, now: datetime) -> list[dict]:
    """The same cards and fields as parsers.parse_search_page (current layout), the research
    crawler's way: parsel/lxml XPath queries, an lxml walk for the rich text, same post-processing."""
    from parsel import Selector

    cards = []
    cards_xpath = '//div[@class="card-wrap"][@mid][.//div[@class="card-feed"]//div[@class="info"]]'
    for card in Selector(text=html).xpath(cards_xpath):
        time_link, source_link = card.xpath('.//div[@class="from"]/a[1]'), card.xpath('.//div[@class="from"]/a[2]')
        path = (time_link.xpath("@href").get() or "").split("?")[0].strip("/").split("/")
        full = card.xpath('.//p[@node-type="feed_list_content_full"]')
        text, topics, at_users, location = _xpath_rich_text((full or card.xpath('.//p[@class="txt"]'))[0].root)
        act = card.xpath('.//div[@class="card-act"]')
        video = card.xpath('.//*[contains(@action-data, "video_src=")]/@action-data').re_first(r"video_src=([^&]+)")
        badge = card.xpath('.//div[@class="avator"]//svg/@id').get()
        cards.append({
            "mid": card.xpath("@mid").get(),
            "bid": path[-1],
            "user_id": path[-2],
            "screen_name": card.xpath('.//div[@class="info"]//a[@nick-name]/@nick-name').get(),
            "text": text, "topics": topics, "at_users": at_users, "location": location,
            "created_at": parsers.parse_weibo_time(time_link.xpath("string(.)").get(), now),
            "source": parsers.clean_text(source_link.xpath("string(.)").get() or "") or None,
            "reposts_count": parsers.parse_count(
                act.xpath('.//a[@action-type="feed_list_forward"]').xpath("string(.)").get()),
            "comments_count": parsers.parse_count(
                act.xpath('.//a[@action-type="feed_list_comment"]').xpath("string(.)").get()),
            "attitudes_count": parsers.parse_count(
                act.xpath('.//a[@action-type="feed_list_like"]//button/span[2]').xpath("string(.)").get()),
            "pics": ["https://" + src.split("//", 1)[-1].split("/", 1)[0] + "/large/" + src.rsplit("/", 1)[-1]
                     for src in card.xpath('.//div[contains(@class, "media-piclist")]//li//img/@src').getall()],
            "video_url": ("https:" + urllib.parse.unquote(video)) if video else None,
            "retweet_id": None,
            "user_verified": _XPATH_BADGES.get(badge or "", "普通用户"),
        })
    return cards


def _xpath_rich_text(element) -> tuple[str, list[str], list[str], str | None]:
    parts, topics, at_users, location = [], [], [], None

    def walk(node) -> None:
        nonlocal location
        if node.text:
            parts.append(node.text)
        for child in node:
            tag = child.tag if isinstance(child.tag, str) else ""
            if tag == "br":
                parts.append(" ")
            elif tag == "img":
                parts.append(child.get("alt") or child.get("title") or "")
            elif tag == "a":
                label = parsers.clean_text("".join(t for t in child.xpath(".//text()[not(ancestor::i)]")))
                if child.get("action-type") in ("fl_fold", "fl_unfold"):
                    pass
                elif child.xpath('.//i[contains(@class, "wbicon") and normalize-space(.)="L"]'):
                    pass  # a video/live card: markup, not text
                elif child.xpath('.//i[contains(@class, "wbicon") and normalize-space(.)="2"]'):
                    location = label or None
                else:
                    if label.startswith("#") and label.endswith("#") and len(label) > 2:
                        topics.append(label[1:-1])
                    elif label.startswith("@") and "/n/" in (child.get("href") or ""):
                        at_users.append(label[1:])
                    walk(child)
            elif tag == "i" and "wbicon" in (child.get("class") or ""):
                pass
            elif tag:
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(element)
    return parsers.clean_text("".join(parts)), list(dict.fromkeys(topics)), list(dict.fromkeys(at_users)), location


def parser_speed(rounds: int) -> dict[str, float]:
    config = simulator_config(1.0, users=60, fault_rate=0.0)
    config.rates = unlimited_rates()
    config.hot_topic_posts, config.topic_posts = 300, 200
    sim = WeiboSimulator(config)
    pages: list[tuple[str, str]] = []
    with sim.running():
        headers = {"User-Agent": BROWSER_UA, "Cookie": sim.new_cookies(1)[0]}
        for topic in sim.topics():
            for page in range(1, 11):
                query = urllib.request.quote(topic.query)
                url = f"{sim.base_url}/weibo?q={query}&timescope={topic.timescope}&page={page}"
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
                    pages.append((url, response.read().decode()))
    now = datetime.now(timezone.utc)
    ours_cards = [post for url, html in pages for post in parsers.parse_search_page(html, url, now).posts]
    xpath_cards = [card for url, html in pages for card in xpath_search_page(html, url, now)]
    same_count = len(ours_cards) == len(xpath_cards)
    agree = sum(a == b for a, b in zip(ours_cards, xpath_cards, strict=True)) if same_count else 0
    timings = {}
    for name, parse in (("selectolax", lambda url, html: parsers.parse_search_page(html, url, now)),
                        ("xpath", lambda url, html: xpath_search_page(html, url, now))):
        started = time.perf_counter()
        for _ in range(rounds):
            for url, html in pages:
                parse(url, html)
        timings[name] = rounds * len(pages) / (time.perf_counter() - started)
    return {"pages": len(pages), "cards": len(ours_cards), "agreement": agree / max(len(ours_cards), 1), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=8.0, help="R: requests/s per cookie")
    parser.add_argument("--users", type=int, default=120, help="users crawled by ours")
    parser.add_argument("--baseline-users", type=int, default=12, help="users crawled by the baseline")
    parser.add_argument("--parse-rounds", type=int, default=3)
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=512 * 2**20, logging_level="ERROR")
    sim = WeiboSimulator(simulator_config(args.rate, args.users, fault_rate=FAULT_RATE))
    users = sorted({post["user_id"] for post in sim.ground_truth()["users"]})
    with sim.running(), tempfile.TemporaryDirectory() as workdir:
        ours_figures = ours(sim, args.rate, users, Path(workdir))
        baseline = research_baseline(sim, args.rate, users[: args.baseline_users])
        faults = sim.stats()["faults"]
    ray.shutdown()
    parse = parser_speed(args.parse_rounds)
    ceiling = COOKIES * args.rate
    figures = {
        "ceiling_fraction": ours_figures["rps"] / ceiling,
        "violations": ours_figures["violations"] + baseline["violations"],
        "parse_speedup": parse["selectolax"] / parse["xpath"],
        "speedup_vs_research_crawler": ours_figures["rps"] / baseline["rps"] if baseline["rps"] else None,
        "baseline_ceiling_fraction": baseline["rps"] / args.rate,
        "ours_rps": ours_figures["rps"],
        "baseline_rps": baseline["rps"],
        "ceiling_rps": ceiling,
        "ours_requests": ours_figures["requests"],
        "ours_retries": ours_figures["retries"],
        "ours_history_rows": ours_figures["history_rows"],
        "faults_injected": faults,
        "parse_pages_per_s_selectolax": parse["selectolax"],
        "parse_pages_per_s_xpath": parse["xpath"],
        "parse_agreement": parse["agreement"],
        "setup": {
            "cookies": COOKIES, "rate_per_cookie": args.rate, "burst": 1, "users": len(users),
            "baseline_users": min(args.baseline_users, len(users)), "fault_rate": FAULT_RATE,
            "fault_delay_s": FAULT_DELAY_S, "simulator_jitter_s": sim.config.jitter_s, **OURS_SETTINGS,
        },
    }
    print(f"ours {ours_figures['rps']:.1f} req/s of {ceiling:.0f} ceiling, baseline {baseline['rps']:.2f} req/s, "
          f"parse selectolax {parse['selectolax']:.0f} vs xpath {parse['xpath']:.0f} pages/s", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
