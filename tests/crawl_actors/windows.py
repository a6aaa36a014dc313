"""The simulator's topics as a crawl's search window, the way a user writes it (YYYY-MM-DD-H, Beijing time)."""

from __future__ import annotations

from crawl_actors.simulator import WeiboSimulator
from crawl_actors.tasks import BEIJING


def topic_hours(sim: WeiboSimulator) -> tuple[str, str]:
    """(start, end) covering every topic of `sim`: the first topic's first hour to the last one's end."""
    topics = sim.topics()
    start = min(t.start for t in topics).astimezone(BEIJING)
    end = max(t.end for t in topics).astimezone(BEIJING)
    return f"{start:%Y-%m-%d}-{start.hour}", f"{end:%Y-%m-%d}-{end.hour}"
