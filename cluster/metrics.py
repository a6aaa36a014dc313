"""Every custom metric SocialAlign exports to the Ray dashboard (Prometheus), declared once.

Metrics are created lazily inside the process that records them (a Ray worker or actor); outside
Ray they are no-ops, so library code can record unconditionally. Names carry the `socialalign_`
prefix on the dashboard; cookies appear only by their short hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    description: str
    tags: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


SPECS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("crawl_requests", "counter", "HTTP requests sent by crawl workers", ("host", "status")),
        MetricSpec("crawl_pages", "counter", "pages fetched and parsed successfully", ("kind",)),
        MetricSpec("crawl_rows", "counter", "rows staged for the crawl tables", ("table",)),
        MetricSpec("crawl_retries", "counter", "tasks sent back to the frontier for another attempt", ("kind",)),
        MetricSpec("crawl_errors", "counter", "failed fetches or parses recorded in the errors table", ("kind",)),
        MetricSpec("crawl_bans", "counter", "cookie outcomes reported to the pool", ("cookie", "outcome")),
        MetricSpec("crawl_cookie_state", "gauge", "1 when the cookie is in this state", ("cookie", "state")),
        MetricSpec("crawl_frontier_tasks", "gauge", "frontier tasks by state", ("state",)),
    )
}


class _NoOp:
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        pass

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        pass


_created: dict[str, Any] = {}


def metric(name: str) -> Any:
    """The Ray metric object for `name` (a no-op while Ray is not running in this process)."""
    if name in _created:
        return _created[name]
    spec = SPECS[name]
    try:
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            return _NoOp()
        full_name = f"socialalign_{spec.name}"
        if spec.kind == "counter":
            made = metrics.Counter(full_name, description=spec.description, tag_keys=spec.tags)
        elif spec.kind == "gauge":
            made = metrics.Gauge(full_name, description=spec.description, tag_keys=spec.tags)
        else:
            made = metrics.Histogram(
                full_name, description=spec.description, boundaries=list(spec.boundaries), tag_keys=spec.tags
            )
    except Exception as error:  # metrics must never break the work they describe
        log.warning("metric %s unavailable: %s", name, error)
        return _NoOp()
    _created[name] = made
    return made


def count(name: str, value: float = 1.0, **tags: str) -> None:
    if value > 0:  # Ray counters refuse zero increments
        _record(metric(name).inc, value, tags)


def gauge(name: str, value: float, **tags: str) -> None:
    _record(metric(name).set, value, tags)


def _record(method: Any, value: float, tags: dict[str, Any]) -> None:
    try:
        method(value, tags={k: str(v) for k, v in tags.items()} or None)
    except Exception as error:  # metrics must never break the work they describe
        log.warning("metric not recorded: %s", error)
