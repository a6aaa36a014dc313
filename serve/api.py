"""The HTTP API over a `Service`: routes, the guard in front of them (bearer auth and the body's
size, before anything is read or parsed), error mapping, metrics.

Micro and macro prediction, OpenAI-compatible chat completions and models, health. This module
never imports torch: the ingress stays a light process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer

from cluster.metrics import count, metric
from serve.http_errors import bad_length, body_too_large, install_error_handlers, unauthorized
from serve.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    Liveness,
    MacroRequest,
    MacroResponse,
    MicroRequest,
    MicroResponse,
    ModelCard,
    ModelList,
)
from serve.service import Service

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz"})  # a bare liveness answer; everything else needs the token
DESCRIPTION = """Predict how users (micro) and crowds (macro) respond to news, with PAC-LoRA.

Models: the base model alone (zero-shot) and PAC-LoRA adapters, by id (`GET /v1/models`).
Auth: `Authorization: Bearer <token>` on every path but `/healthz` (this document and `/docs` too)
when the server sets SOCIALALIGN_SERVE_TOKEN; it is checked before the body is read.
Errors: 401 bad token, 404 unknown model, 413 a configured limit exceeded (named in the message),
422 invalid input (field-level), 503 overloaded (retry later).
Chat completions route both PAC-LoRA routers on the last user message (no user/news structure).
"""
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in (
        (401, "missing or invalid bearer token"),
        (404, "unknown model"),
        (413, "a configured limit is exceeded; error.code names it"),
        (422, "invalid input; detail lists each field"),
        (503, "overloaded; retry later"),
    )
}
# Declared on the routes for the OpenAPI document (clients and fuzzers learn to send it); the
# Guard checks it, before FastAPI reads anything.
BEARER = HTTPBearer(auto_error=False, description="the server's SOCIALALIGN_SERVE_TOKEN, when it sets one")


def create_api(service: Service, token_sha256: str | None = None) -> FastAPI:
    """The FastAPI app over `service`; every path but /healthz needs the bearer token whose SHA-256 is
    `token_sha256` (None: no token, which the app only allows on a loopback host)."""
    app = FastAPI(title="SocialAlign", version=_version(), description=DESCRIPTION)
    guarded = [Depends(BEARER)]
    install_error_handlers(app)
    app.add_middleware(Guard, token_sha256=token_sha256, max_request_bytes=service.config.max_request_bytes)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Liveness:
        """Liveness, for probes: no token needed, and nothing about what is served."""
        return Liveness()

    @app.get("/v1/health", tags=["ops"], dependencies=guarded, responses=ERRORS)
    async def health() -> Health:
        """What is served: the model ids, the default one, the labeller."""
        return service.health()

    @app.get("/v1/models", tags=["openai"], dependencies=guarded, responses=ERRORS)
    async def list_models() -> ModelList:
        return service.model_list()

    @app.get("/v1/models/{model_id}", tags=["openai"], dependencies=guarded, responses=ERRORS)
    async def retrieve_model(model_id: str) -> ModelCard:
        return service.model_card(model_id)

    @app.post("/v1/predict/micro", tags=["predict"], dependencies=guarded, responses=ERRORS)
    async def predict_micro(request: MicroRequest) -> MicroResponse:
        """The posts one user would write about the news (n samples), each with its sentiment."""
        return await service.micro(request)

    @app.post("/v1/predict/macro", tags=["predict"], dependencies=guarded, responses=ERRORS)
    async def predict_macro(request: MacroRequest) -> MacroResponse:
        """The sentiment distribution of a population's predicted posts, counts and examples per class."""
        return await service.macro(request)

    @app.post(
        "/v1/chat/completions", tags=["openai"], dependencies=guarded, responses=ERRORS, response_model=ChatCompletion
    )
    async def chat_completions(request: ChatCompletionRequest) -> Any:
        """OpenAI-compatible. stream=true sends the whole completion as one chunk, then [DONE];
        stream_options.include_usage adds a last chunk with the usage."""
        completion = await service.chat(request)
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(_stream(completion, usage), media_type="text/event-stream")
        return completion

    return app


class Guard:
    """Pure ASGI, in front of everything FastAPI does, so nothing is read or parsed before it passes:

    1. the bearer token, on every path but /healthz (401, from the headers alone);
    2. the body's size: a Content-Length over max_request_bytes is refused unread, and a chunked
       body is counted as it streams in and refused the moment it passes the limit (413); the
       body that passes is handed on whole, so the app never holds more than the limit;
    3. the request's metrics (count by endpoint and status, latency).
    """

    def __init__(self, app: ASGIApp, token_sha256: str | None, max_request_bytes: int) -> None:
        self.app = app
        self.token_sha256 = token_sha256
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.monotonic()
        status = 500  # unless a response starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if not self.authorized(scope):
                await unauthorized()(scope, receive, sending)
                return
            body, refusal = await self.read_body(scope, receive)
            if refusal is not None:
                await refusal(scope, receive, sending)
            elif body is not None:
                await self.app(scope, body, sending)
            else:
                status = 499  # the client went away before its body was in
        finally:
            self.record(scope, status, time.monotonic() - began)

    def authorized(self, scope: Scope) -> bool:
        if self.token_sha256 is None or scope["path"] in PUBLIC_PATHS:
            return True
        header = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        scheme, _, credentials = header.partition(b" ")
        given = credentials.strip() if scheme.lower() == b"bearer" else b""
        return hmac.compare_digest(hashlib.sha256(given).hexdigest(), self.token_sha256)

    async def read_body(self, scope: Scope, receive: Receive) -> tuple[Receive | None, Any]:
        """(a receive that replays the whole body, None), (None, a refusal), or (None, None) when the
        client went away. A request without Content-Length or chunked encoding has no body."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if declared is None and not chunked:
            return receive, None
        limit = self.max_request_bytes
        if declared is not None:
            if not declared.strip().isdigit():
                return None, bad_length()
            if int(declared) > limit:
                return None, body_too_large(int(declared), limit, declared=True)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None, body_too_large(limit, limit, declared=False)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return _replay(b"".join(chunks), receive), None

    @staticmethod
    def record(scope: Scope, status: int, seconds: float) -> None:
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        try:
            count("serve_requests", endpoint=endpoint, status=str(status))
            metric("serve_latency_s").observe(seconds, tags={"endpoint": endpoint})
        except Exception as error:  # metrics must never break the work they describe
            log.warning("serve request metrics not recorded: %s", error)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as one message, then the client's own messages (a disconnect) from there on."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _stream(completion: ChatCompletion, include_usage: bool) -> AsyncIterator[str]:
    base: dict[str, Any] = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
                            "model": completion.model}
    if include_usage:
        base["usage"] = None  # as OpenAI sends it: null on every chunk but the last
    for choice in completion.choices:
        delta = {"role": "assistant", "content": choice.message.content}
        yield _event({**base, "choices": [{"index": choice.index, "delta": delta, "finish_reason": None}]})
        end = {"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}
        yield _event({**base, "choices": [end]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": completion.usage.model_dump()})
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("socialalign")
    except PackageNotFoundError:
        return "0"
