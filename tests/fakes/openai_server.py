"""A local OpenAI-compatible chat server for tests and benchmarks: deterministic answers,
configurable latency, injected 429 / 500 / timeouts, scripted answers (a 503 with Retry-After,
an empty answer, a hang), and a count of every call.

    with FakeLLM(FakeLLMConfig(latency_s=0.1)).running() as llm:
        client = openai.OpenAI(base_url=llm.base_url, api_key="x")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from cluster.http_thread import serve_in_thread

MODEL = "fake-persona-1"


@dataclass(frozen=True)
class Scripted:
    """How to answer one request, in place of the usual behaviour."""

    status: int = 200
    retry_after: str | None = None  # the Retry-After header of the answer
    content: str | None = None  # a 200's message (None: the usual persona answer)
    delay_s: float = 0.0  # hang this long first (longer than the client waits: a timeout)


@dataclass
class FakeLLMConfig:
    latency_s: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    timeout_delay_s: float = 5.0  # how long a "timeout" answer hangs (longer than the client waits)
    seed: int = 0
    hold_after: int | None = None  # answer this many requests, then hold the rest until release()
    script: list[Scripted] = field(default_factory=list)  # the first requests' answers, in order
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class CallLog:
    total: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_prompt: Counter = field(default_factory=Counter)  # sha256 of the user message -> calls
    first_at: float | None = None  # time.monotonic() of the first and the last answer
    last_at: float | None = None
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of every request's arrival
    api_keys: Counter = field(default_factory=Counter)  # the bearer token of every request


class FakeLLM:
    def __init__(self, config: FakeLLMConfig | None = None) -> None:
        self.config = config or FakeLLMConfig()
        self.calls = CallLog()
        self._lock = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._script = list(self.config.script)
        self.base_url = ""
        self._arrived = 0
        self._holding = 0
        self._released = threading.Event()

    @staticmethod
    def answer(prompt: str) -> str:
        """The persona this server gives for a prompt: the same prompt, the same answer."""
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        facets = zip(("兴趣话题", "语言风格", "情感基调", "性格特征", "价值观"),
                     ("科技", "幽默", "积极", "乐观", "务实"), strict=True)
        return "\n".join(f"{i}. {facet}：{word}{digest[i * 4:(i + 1) * 4]}"
                         for i, (facet, word) in enumerate(facets, 1))

    @contextmanager
    def running(self) -> Iterator[FakeLLM]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        with serve_in_thread(app, self.config.host, self.config.port, name="fake-llm") as url:
            self.base_url = f"{url}/v1"
            try:
                yield self
            finally:
                self.release()  # no handler may outlive the server

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "local"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self._arrival(request)
        try:
            body = await request.json()
            prompt = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        except (json.JSONDecodeError, KeyError, StopIteration, TypeError):
            return self._record(_error(400, "bad request"), "")
        if await self._held_until_release(request):
            return web.Response(status=499)  # the client hung up while held: it got nothing, count nothing
        scripted = self._next_scripted()
        if scripted is not None:
            return await self._scripted(scripted, body, prompt)
        fault = self._draw()
        if fault == "timeout":
            await asyncio.sleep(self.config.timeout_delay_s)
        await asyncio.sleep(self.config.latency_s)
        if fault == "429":
            return self._record(_error(429, "rate limited"), prompt)
        if fault == "500":
            return self._record(_error(500, "server error"), prompt)
        reply = _completion(body, prompt, self.answer(prompt))
        return self._record(reply, prompt, "timeout" if fault == "timeout" else None)

    async def _scripted(self, scripted: Scripted, body: dict, prompt: str) -> web.Response:
        await asyncio.sleep(scripted.delay_s + self.config.latency_s)
        if scripted.status == 200:
            content = self.answer(prompt) if scripted.content is None else scripted.content
            reply = _completion(body, prompt, content)
        else:
            reply = _error(scripted.status, f"scripted {scripted.status}")
        if scripted.retry_after is not None:
            reply.headers["Retry-After"] = scripted.retry_after
        return self._record(reply, prompt, "timeout" if scripted.delay_s else None)

    def _arrival(self, request: web.Request) -> None:
        with self._lock:
            self.calls.arrivals.append(time.monotonic())
            self.calls.api_keys[request.headers.get("Authorization", "").removeprefix("Bearer ")] += 1

    def _next_scripted(self) -> Scripted | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    @property
    def holding(self) -> int:
        """Held requests whose client is still connected."""
        with self._lock:
            return self._holding

    async def _held_until_release(self, request: web.Request) -> bool:
        """Hold a request past `hold_after` until release(); True when its client went away meanwhile."""
        with self._lock:
            self._arrived += 1
            if self.config.hold_after is None or self._arrived <= self.config.hold_after:
                return False
            self._holding += 1
        try:
            while not self._released.is_set():
                if request.transport is None or request.transport.is_closing():
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            with self._lock:
                self._holding -= 1

    def release(self) -> None:
        """Answer the held requests (and every later one)."""
        self._released.set()

    def _draw(self) -> str | None:
        with self._lock:
            roll = self._rng.random()
        c = self.config
        for name, rate in (("429", c.rate_429), ("500", c.rate_500), ("timeout", c.rate_timeout)):
            if roll < rate:
                return name
            roll -= rate
        return None

    def _record(self, response: web.Response, prompt: str, outcome: str | None = None) -> web.Response:
        """Count the call; a hung one (the client gave up on it) counts as "timeout", not by its status."""
        with self._lock:
            now = time.monotonic()
            self.calls.first_at = self.calls.first_at or now
            self.calls.last_at = now
            self.calls.total += 1
            self.calls.by_status[outcome or response.status] += 1
            self.calls.by_prompt[hashlib.sha256(prompt.encode()).hexdigest()] += 1
        return response


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=status)


def _completion(body: dict, prompt: str, content: str) -> web.Response:
    return web.json_response({
        "id": "chatcmpl-" + hashlib.sha256(prompt.encode()).hexdigest()[:12],
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model") or MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt) // 2, "completion_tokens": len(content) // 2,
                  "total_tokens": len(prompt) // 2 + len(content) // 2},
    })
