"""Calling any OpenAI-compatible chat endpoint (OpenAI, vLLM, our own `serve`): one config model and
one client for every stage that does (personas in build-dataset, the LLM judge in serve/evaluate).

`LLMClient` bounds requests in flight (`concurrency`), caps their start rate
(`requests_per_second`) and retries by the shared policy of `cluster.retry` (the `openai` client's
own retries are off, so one policy decides). It is the `openai` client on its aiohttp transport,
posting plain JSON: about 1.7 ms of CPU per call instead of 2.5-3 ms with the defaults, and that
CPU is what bounds one worker's calls per second against a fast endpoint. The key comes from the
config, else from the environment (`API_KEY_ENV`), and is never logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import Field, SecretStr

from cluster.config import ConfigError, StrictModel, secret
from cluster.retry import RETRY_STATUSES, Backoff, retrying

API_KEY_ENV = ("SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY")
Answer = TypeVar("Answer")


class LLMEndpointConfig(StrictModel):
    """Any OpenAI-compatible endpoint (OpenAI, vLLM, our own `serve`). No base_url: offline fallback."""

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="model name the endpoint serves")
    api_key: SecretStr | None = secret(*API_KEY_ENV, description="API key of the endpoint")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0, description="tries after the first (timeouts, 408/409/429/5xx, bad answers)")
    concurrency: int = Field(8, ge=1, description="requests in flight per worker")
    requests_per_second: float | None = Field(None, gt=0, description="global request rate cap")


class UnusableAnswer(ValueError):
    """The endpoint answered, but not usably (empty, unparseable): worth asking again."""


class StartRate:
    """At most `rate` request starts per second, spaced evenly (None: no cap)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_start = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            delay = self.next_start - now
            self.next_start = max(now, self.next_start) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class LLMClient:
    """Chat completions through `config`'s endpoint; create it inside the event loop that uses it."""

    def __init__(self, config: LLMEndpointConfig, rate_share: float = 1.0, backoff: Backoff | None = None) -> None:
        """`rate_share`: this client's part of the endpoint's `requests_per_second` (one of several
        workers); `backoff`: the retry policy (default: the shared one, `max_retries` + 1 tries)."""
        from openai import AsyncOpenAI, DefaultAioHttpClient

        if not config.base_url or not config.model:
            raise ValueError("an LLM endpoint needs base_url and model")
        self.model = config.model
        self.policy = backoff or Backoff(attempts=config.max_retries + 1)
        # aiohttp rather than the default httpx transport: a quarter less CPU per call (its
        # connection pool is not rescanned for every request).
        self.client = AsyncOpenAI(
            base_url=config.base_url, api_key=api_key(config) or "not-needed", timeout=config.timeout_s, max_retries=0,
            http_client=DefaultAioHttpClient(timeout=config.timeout_s),
        )
        self.gate = asyncio.Semaphore(config.concurrency)
        rate = config.requests_per_second * rate_share if config.requests_per_second else None
        self.start_rate = StartRate(rate)

    async def chat(
        self, messages: list[dict[str, str]], accept: Callable[[Any], Answer], **options: Any
    ) -> tuple[Answer, int]:
        """`accept(reply)` of the first usable reply, and the tries it took. `options` are fields of
        the request body (temperature, max_tokens, response_format, ...). `accept` raises
        UnusableAnswer to ask again; a failure left after the retries is raised (an openai.APIError,
        or UnusableAnswer), and `tries_of(failure)` says how many tries it took."""
        tries = 0
        try:
            async for attempt in retrying(self.policy, is_retryable, retry_after_header):
                with attempt:
                    tries += 1
                    async with self.gate:
                        await self.start_rate.wait()
                        reply = await self._complete(messages, options)
                    return accept(reply), tries
        except Exception as failure:
            failure.llm_tries = tries  # type: ignore[attr-defined]  # the failure stays what the endpoint said
            raise
        raise AssertionError("unreachable: retrying() raises the last failure")

    async def _complete(self, messages: list[dict[str, str]], options: dict[str, Any]) -> Any:
        import openai
        from openai.types.chat import ChatCompletion

        # The openai client's documented plain POST: `chat.completions.create` would walk every
        # message through its TypedDict transformer (a third of the client's CPU per call) to
        # produce the same JSON these plain dicts already are.
        body = {"model": self.model, "messages": messages, **options}
        try:
            return await self.client.post("/chat/completions", body=body, cast_to=ChatCompletion)
        except openai.APITimeoutError as error:
            if _connection_failed(error):
                raise openai.APIConnectionError(request=error.request) from error
            raise

    async def close(self) -> None:
        await self.client.close()


def _connection_failed(error: BaseException) -> bool:
    """The aiohttp transport reports a failed connection (refused, reset) as a connect timeout: a
    timeout whose root is an aiohttp connection error other than aiohttp's own timeouts was none."""
    import aiohttp

    root = error.__cause__.__cause__ if error.__cause__ is not None else None
    return isinstance(root, aiohttp.ClientConnectionError) and not isinstance(root, aiohttp.ServerTimeoutError)


def tries_of(failure: BaseException) -> int:
    """The tries a failure raised by `LLMClient.chat` took (1 for any other error)."""
    return getattr(failure, "llm_tries", 1)


def api_key(config: LLMEndpointConfig) -> str | None:
    """The config's key, else the first of API_KEY_ENV that is set (a worker reads its own environment)."""
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    return next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)


def without_key(config: LLMEndpointConfig) -> LLMEndpointConfig:
    """The endpoint as a Ray task or actor may receive it: its key never travels in arguments (the
    dashboard and the object store would hold it); the worker reads it with `api_key` from its environment."""
    return config.model_copy(update={"api_key": None})


@contextmanager
def key_for_local_workers(config: LLMEndpointConfig, used: bool = True) -> Iterator[bool]:
    """While open, a key given in the config (not in the environment) sits in this process's environment,
    for the local Ray the job may start, whose workers inherit it; the environment is restored after.
    Yields whether it did: call `refuse_inline_key` when the job then joins a running cluster instead."""
    key = config.api_key.get_secret_value() if config.api_key is not None else None
    from_env = next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)
    if not used or not config.base_url or key is None or key == from_env:
        yield False
        return
    before = os.environ.get(API_KEY_ENV[0])
    os.environ[API_KEY_ENV[0]] = key
    try:
        yield True
    finally:
        if before is None:
            os.environ.pop(API_KEY_ENV[0], None)
        else:
            os.environ[API_KEY_ENV[0]] = before


def refuse_inline_key(field: str, workers: str) -> None:
    raise ConfigError(
        f"{field}: the key is given in the config, but the {workers} of a running Ray cluster read it from their "
        f"own environment: set {API_KEY_ENV[0]} where the Ray nodes run (k8s: the socialalign-secrets Secret) "
        "and leave it out of the config"
    )


def is_retryable(error: BaseException) -> bool:
    import openai

    if isinstance(error, (UnusableAnswer, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code in RETRY_STATUSES


def retry_after_header(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    return response.headers.get("retry-after") if response is not None else None


def failure_reason(error: BaseException) -> str:
    """A short, secret-free reason: the HTTP status, or the kind of failure (timeout, connection)."""
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__
