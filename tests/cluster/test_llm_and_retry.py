"""The shared LLM client and retry policy: the real `openai` client against a real OpenAI-compatible
server on 127.0.0.1 (tests/fakes) that answers each request as scripted and records when it arrived."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import openai
import pytest

from cluster.llm import LLMClient, LLMEndpointConfig, UnusableAnswer, api_key, failure_reason, tries_of
from cluster.retry import Backoff, retry_after_s, retrying
from tests.fakes.openai_server import FakeLLM, FakeLLMConfig, Scripted

FAST = Backoff(attempts=4, initial_s=0.01, max_s=0.02)
MESSAGES = [{"role": "user", "content": "你好"}]


def text(reply) -> str:
    content = reply.choices[0].message.content
    if not content:
        raise UnusableAnswer("empty answer")
    return content


def ask(llm: FakeLLM, calls: int = 1, backoff: Backoff | None = FAST, **endpoint) -> list[tuple[str, int]]:
    """`calls` chats at once through one LLMClient, as a worker makes them."""
    config = LLMEndpointConfig(base_url=llm.base_url, model="fake-persona-1", **{"timeout_s": 5.0, **endpoint})

    async def run() -> list[tuple[str, int]]:
        client = LLMClient(config, backoff=backoff)
        try:
            return await asyncio.gather(*(client.chat(MESSAGES, text) for _ in range(calls)))
        finally:
            await client.close()

    return asyncio.run(run())


def server(*script: Scripted, **config) -> FakeLLM:
    return FakeLLM(FakeLLMConfig(script=list(script), **config))


def test_a_503_is_retried_after_the_seconds_its_retry_after_names() -> None:
    with server(Scripted(503, retry_after="1")).running() as llm:
        [(answer, tries)] = ask(llm)
        first, second = llm.calls.arrivals
    assert answer == FakeLLM.answer("你好") and tries == 2
    # the server's wait, not the 0.01-0.02 s the policy would have picked (a lower bound only: a loaded
    # machine may add to any wait, so an upper bound would measure the machine, not the client)
    assert second - first >= 1.0


def test_a_retry_after_given_as_an_http_date_is_honoured() -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    with server(Scripted(503, retry_after=later)).running() as llm:
        [(_, tries)] = ask(llm)
        first, second = llm.calls.arrivals
    assert tries == 2 and second - first >= 0.9  # the date has whole seconds: 1-2 s from now, never the policy's 0.02 s


def test_a_retry_after_beyond_the_policys_limit_is_not_waited_for() -> None:
    with server(Scripted(503, retry_after="3600")).running() as llm:
        [(_, tries)] = ask(llm, backoff=Backoff(attempts=2, initial_s=0.01, max_retry_after_s=60))
        first, second = llm.calls.arrivals
    # the policy's own wait (<= 0.01 s), not the hour asked nor the 60 s cap: any load stays far below 30 s
    assert tries == 2 and second - first < 30.0


def test_429s_are_retried_until_an_answer_comes() -> None:
    with server(Scripted(429), Scripted(429)).running() as llm:
        [(answer, tries)] = ask(llm)
        statuses = llm.calls.by_status
    assert answer == FakeLLM.answer("你好") and tries == 3
    assert statuses == {429: 2, 200: 1}


def test_a_request_that_times_out_is_asked_again() -> None:
    with server(Scripted(delay_s=2.0)).running() as llm:
        [(answer, tries)] = ask(llm, timeout_s=0.3)
        asked = len(llm.calls.arrivals)
    # a second try, answered: the client gave up on the hung request (had it waited, one try would answer)
    assert answer == FakeLLM.answer("你好") and tries == 2 and asked == 2


def test_a_400_is_not_retried_and_is_raised_as_the_endpoint_said() -> None:
    with server(Scripted(400)).running() as llm:
        with pytest.raises(openai.BadRequestError) as failure:
            ask(llm)
        calls = llm.calls.total
    assert calls == 1 and tries_of(failure.value) == 1 and failure_reason(failure.value) == "HTTP 400"


def test_when_the_retries_run_out_the_last_failure_is_raised() -> None:
    with server(rate_500=1.0).running() as llm:
        with pytest.raises(openai.InternalServerError) as failure:
            ask(llm, backoff=None, max_retries=2)  # the default policy: max_retries + 1 tries
        calls = llm.calls.total
    assert calls == 3 and tries_of(failure.value) == 3 and failure_reason(failure.value) == "HTTP 500"


def test_an_unusable_answer_is_asked_again() -> None:
    with server(Scripted(content="")).running() as llm:
        [(answer, tries)] = ask(llm)
    assert answer == FakeLLM.answer("你好") and tries == 2


def test_an_answer_that_stays_unusable_is_raised_after_the_tries() -> None:
    with server(*[Scripted(content="")] * 4).running() as llm:
        with pytest.raises(UnusableAnswer) as failure:
            ask(llm)
    assert tries_of(failure.value) == FAST.attempts


def test_requests_start_no_faster_than_the_rate_cap() -> None:
    with server().running() as llm:
        ask(llm, calls=6, concurrency=6, requests_per_second=10)
        arrivals = sorted(llm.calls.arrivals)
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 6 and min(gaps) >= 0.08 and arrivals[-1] - arrivals[0] >= 0.45


def test_no_more_requests_in_flight_than_the_concurrency() -> None:
    with server(latency_s=0.2).running() as llm:
        started = time.monotonic()
        ask(llm, calls=6, concurrency=2)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.6  # 6 calls of 0.2 s, 2 at a time: three waves


def test_the_key_comes_from_the_config_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALALIGN_LLM_API_KEY", "sk-from-env")
    with server().running() as llm:
        ask(llm, api_key="sk-from-config")
        ask(llm)
        keys = llm.calls.api_keys
    assert keys == {"sk-from-config": 1, "sk-from-env": 1}
    assert api_key(LLMEndpointConfig()) == "sk-from-env"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 3 ", 3.0), ("0.5", 0.5), ("-4", 0.0), ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
     ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=timezone.utc)
    assert retry_after_s(header, now=now) == seconds


def test_backoff_waits_with_full_jitter_under_a_cap_unless_the_server_says_how_long() -> None:
    policy = Backoff(initial_s=0.5, max_s=4.0, max_retry_after_s=60)
    waits = [policy.wait_s(retry) for retry in (1, 2, 3, 4, 5) for _ in range(200)]
    assert all(0 <= wait <= 4.0 for wait in waits) and min(waits) < 0.05  # full jitter reaches down to 0
    assert max(policy.wait_s(1) for _ in range(200)) <= 0.5
    assert max(policy.wait_s(6) for _ in range(200)) > 3.0  # 0.5 * 2**5 = 16, capped at 4
    assert policy.wait_s(1, retry_after=7.0) == 7.0
    assert policy.wait_s(1, retry_after=61.0) <= 0.5  # past the limit: the computed wait


def test_retrying_retries_only_what_it_is_told_and_raises_the_failure_itself() -> None:
    async def attempts(error: Exception) -> int:
        tries = 0
        try:
            async for attempt in retrying(FAST, lambda e: isinstance(e, ConnectionError)):
                with attempt:
                    tries += 1
                    raise error
        except type(error):
            return tries
        raise AssertionError("the failure was swallowed")

    assert asyncio.run(attempts(ConnectionError("down"))) == FAST.attempts
    assert asyncio.run(attempts(KeyError("bug"))) == 1


def test_nothing_listening_is_a_connection_error_and_a_hang_a_timeout() -> None:
    from tests.conftest import free_port

    with pytest.raises(openai.APIConnectionError) as refused:
        asyncio.run(_one(LLMEndpointConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m")))
    with server(*[Scripted(delay_s=2.0)] * FAST.attempts).running() as llm:
        with pytest.raises(openai.APITimeoutError) as hung:
            asyncio.run(_one(LLMEndpointConfig(base_url=llm.base_url, model="m", timeout_s=0.2)))
    assert failure_reason(refused.value) == "APIConnectionError" and tries_of(refused.value) == FAST.attempts
    assert not isinstance(refused.value, openai.APITimeoutError)
    assert failure_reason(hung.value) == "APITimeoutError" and tries_of(hung.value) == FAST.attempts


async def _one(config: LLMEndpointConfig) -> tuple[str, int]:
    client = LLMClient(config, backoff=FAST)
    try:
        return await client.chat(MESSAGES, text)
    finally:
        await client.close()
