"""`python -m crawl_actors.simulator --port 8765 --seed 0 --cookies 4`: serve a local Weibo until Ctrl-C."""

from __future__ import annotations

import argparse
import threading

from crawl_actors.simulator import SimulatorConfig, WeiboSimulator, unlimited_rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crawl_actors.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cookies", type=int, default=4, help="how many valid cookies to issue")
    parser.add_argument("--users", type=int, default=SimulatorConfig.num_users)
    parser.add_argument("--topics", type=int, default=SimulatorConfig.num_topics)
    parser.add_argument("--layout", choices=("current", "2020"), default="current", help="search page layout")
    parser.add_argument("--unlimited", action="store_true", help="no rate limits (Weibo's paces otherwise)")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = SimulatorConfig(seed=args.seed, num_users=args.users, num_topics=args.topics, search_layout=args.layout,
                             host=args.host, port=args.port, fault_rate=args.fault_rate)
    if args.unlimited:
        config.rates = unlimited_rates()
    simulator = WeiboSimulator(config)
    with simulator.running():
        print(f"Weibo simulator at {simulator.base_url} (seed {args.seed})", flush=True)
        for topic in simulator.topics():
            print(f"topic {topic.query} timescope={topic.timescope}{' (hot)' if topic.hot else ''}", flush=True)
        for cookie in simulator.new_cookies(args.cookies):
            print(f"cookie {cookie}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
