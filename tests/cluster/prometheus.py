"""Reading a Ray node's Prometheus endpoint in tests: the samples of the metrics it exports."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable

Samples = dict[str, list[tuple[dict[str, str], float]]]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """metric name -> (labels, value) of each of its samples, from Prometheus text format."""
    found: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found.setdefault(match[1], []).append((dict(_LABEL.findall(match[2])), float(match[3])))
    return found


def scrape_until(port: int, done: Callable[[Samples], bool], timeout_s: float) -> tuple[Samples, str]:
    """Scrape http://127.0.0.1:`port`/metrics until `done(samples)` or `timeout_s`; the last scrape."""
    deadline = time.monotonic() + timeout_s
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode("utf-8")
        samples = parse(text)
        if done(samples) or time.monotonic() > deadline:
            return samples, text
        time.sleep(0.5)
