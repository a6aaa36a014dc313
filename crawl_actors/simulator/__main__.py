"""`python -m crawl_actors.simulator --port 8765 --seed 0 --cookies 4`: serve a local Weibo until Ctrl-C
or SIGTERM. With --json it prints one JSON line instead (base_url, topics, cookies), for programs.
With --write-truth DIR it serves nothing: it writes the same world's truth (and its oracle's
predictions for --oracle-cases) to Parquet in DIR, prints one JSON line and exits."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from crawl_actors.simulator import HOSTS, RateLimit, SimulatorConfig, WeiboSimulator, unlimited_rates, weibo_limits
from crawl_actors.simulator.corpus import BEIJING
from crawl_actors.simulator.truth_files import write_truth_files


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.write_truth is None and (args.truth_topic or args.oracle_cases):
        parser.error("--truth-topic and --oracle-cases go with --write-truth DIR")
    config = SimulatorConfig(seed=args.seed, num_users=args.users, num_topics=args.topics, search_layout=args.layout,
                             timeline_paging=args.timeline_paging,
                             history_posts=tuple(args.history), hot_topic_posts=args.hot_topic_posts,
                             topic_posts=args.topic_posts, host=args.host, port=args.port, fault_rate=args.fault_rate)
    if args.write_truth is not None:
        try:
            written = write_truth_files(config, args.write_truth, args.truth_topic, args.oracle_cases,
                                        args.oracle_samples, args.oracle_seed, args.oracle_variant)
        except ValueError as error:
            parser.error(str(error))
        print(json.dumps(written, ensure_ascii=False), flush=True)
        return
    config.rates = unlimited_rates() if args.unlimited else args.rates
    simulator = WeiboSimulator(config)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the `with` below: the server stops cleanly
    with simulator.running():
        cookies = simulator.new_cookies(args.cookies)
        print(_json(simulator, cookies) if args.json else _text(simulator, args.seed, cookies), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crawl_actors.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cookies", type=int, default=4, help="how many valid cookies to issue")
    parser.add_argument("--users", type=int, default=SimulatorConfig.num_users)
    parser.add_argument("--topics", type=int, default=SimulatorConfig.num_topics)
    parser.add_argument("--history", type=int, nargs=2, metavar=("LOW", "HIGH"), default=SimulatorConfig.history_posts,
                        help="timeline posts per user, besides their topic posts")
    parser.add_argument("--hot-topic-posts", type=int, default=SimulatorConfig.hot_topic_posts)
    parser.add_argument("--topic-posts", type=int, default=SimulatorConfig.topic_posts, help="each other topic")
    parser.add_argument("--layout", choices=("current", "2020"), default="current", help="search page layout")
    parser.add_argument("--timeline-paging", choices=("since_id", "page"), default="since_id",
                        help="how a timeline page names the next one: since_id (newer Weibo) or page number and total")
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument("--rates", type=_rates, default=weibo_limits(),
                        help="per-cookie limits, e.g. search=20:2,mobile=40:4 (rate:burst; Weibo's paces otherwise)")
    limits.add_argument("--unlimited", action="store_true", help="no rate limits")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--json", action="store_true", help="print one JSON line: base_url, topics, cookies")
    truth = parser.add_argument_group("truth", "write this world's truth to Parquet instead of serving it")
    truth.add_argument("--write-truth", type=Path, metavar="DIR",
                       help="write DIR/truth.parquet (evaluate's truth), and DIR/oracle.parquet with --oracle-cases")
    truth.add_argument("--truth-topic", action="append", metavar="NAME", help="only this topic (repeat; default: all)")
    truth.add_argument("--oracle-cases", type=Path, metavar="SFT",
                       help="an SFT split (build-dataset's sft/test): the oracle writes each case's post again")
    truth.add_argument("--oracle-samples", type=_positive, default=5, metavar="K", help="oracle posts per case")
    truth.add_argument("--oracle-seed", type=int, default=0, metavar="S", help="the oracle's fresh randomness")
    truth.add_argument("--oracle-variant", default="full", metavar="NAME", help="the cases' prompt variant")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer >= 1")
    return value


def _rates(text: str) -> dict[str, RateLimit]:
    """'search=20:2,mobile=40:4' over Weibo's limits for the hosts not named."""
    rates = weibo_limits()
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, limit = item.partition("=")
        rate, _, burst = limit.partition(":")
        if host not in HOSTS:
            raise argparse.ArgumentTypeError(f"unknown host {host!r}: expected one of {', '.join(HOSTS)}")
        try:
            rates[host] = RateLimit(float(rate), int(burst or 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected HOST=RATE[:BURST], RATE > 0, BURST >= 1") from None
    return rates


def _json(simulator: WeiboSimulator, cookies: list[str]) -> str:
    topics = [{"name": t.name, "query": t.query, "start": t.start.astimezone(BEIJING).isoformat(),
               "end": t.end.astimezone(BEIJING).isoformat(), "hot": t.hot} for t in simulator.topics()]
    return json.dumps({"base_url": simulator.base_url, "topics": topics, "cookies": cookies}, ensure_ascii=False)


def _text(simulator: WeiboSimulator, seed: int, cookies: list[str]) -> str:
    lines = [f"Weibo simulator at {simulator.base_url} (seed {seed})"]
    lines += [f"topic {t.query} timescope={t.timescope}{' (hot)' if t.hot else ''}" for t in simulator.topics()]
    lines += [f"cookie {cookie}" for cookie in cookies]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
