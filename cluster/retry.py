"""One retry policy for every call from a stage to another service: LLM endpoints (personas, the
LLM judge) and our own serve app (predict through an endpoint).

Exponential backoff with full jitter, capped; a server's `Retry-After` (seconds or an HTTP date)
is honoured, up to `max_retry_after_s`, instead of the computed wait. Built on tenacity: callers
say which failures are worth asking again and how to read a failure's Retry-After.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import tenacity

# HTTP statuses that say "later" rather than "never": timeout, conflict, rate limit, server trouble.
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """`attempts` tries in all; the wait before try n+1 is uniform in [0, min(max_s, initial_s * 2**n)]
    (full jitter, so clients that failed together do not come back together), or the server's
    Retry-After when it gave one."""

    attempts: int = 6
    initial_s: float = 0.5
    max_s: float = 30.0
    max_retry_after_s: float = 120.0

    def wait_s(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if retry_after is not None and 0 <= retry_after <= self.max_retry_after_s:
            return retry_after
        return random.uniform(0, min(self.max_s, self.initial_s * 2 ** (retry - 1)))


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header as seconds from now: `120` or `Wed, 21 Oct 2026 07:28:00 GMT`; None if unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - (now or datetime.now(timezone.utc))).total_seconds())


def retrying(
    policy: Backoff,
    retry_on: Callable[[BaseException], bool],
    retry_after_of: Callable[[BaseException], str | None] = lambda error: None,
) -> tenacity.AsyncRetrying:
    """An async retry loop: `async for attempt in retrying(...): with attempt: ...`.

    Retries a failure for which `retry_on` is true, `policy.attempts` tries in all, then raises the
    last failure itself (not tenacity's wrapper)."""

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        after = retry_after_s(retry_after_of(error)) if error is not None else None
        return policy.wait_s(state.attempt_number, after)

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        retry=tenacity.retry_if_exception(retry_on),
        reraise=True,
    )
