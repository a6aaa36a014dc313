"""The HTTP API over a `Service`: routes, bearer auth, error mapping, the body-size guard, metrics.

Micro and macro prediction, OpenAI-compatible chat completions and models, health. This module
never imports torch: the ingress stays a light process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cluster.metrics import count, metric
from serve.http_errors import Unauthorized, body_too_large, install_error_handlers
from serve.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    Health,
    MacroRequest,
    MacroResponse,
    MicroRequest,
    MicroResponse,
    ModelList,
)
from serve.service import Service

log = logging.getLogger(__name__)

DESCRIPTION = """Predict how users (micro) and crowds (macro) respond to news, with PAC-LoRA.

Models: the base model alone (zero-shot) and PAC-LoRA adapters, by id (`GET /v1/models`).
Auth: `Authorization: Bearer <token>` on /v1/* when the server sets SOCIALALIGN_SERVE_TOKEN.
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
BEARER = HTTPBearer(auto_error=False, description="the server's SOCIALALIGN_SERVE_TOKEN, when it sets one")


def create_api(service: Service, token_sha256: str | None = None) -> FastAPI:
    """The FastAPI app over `service`; /v1/* needs the bearer token whose SHA-256 is `token_sha256`."""
    app = FastAPI(title="SocialAlign", version=_version(), description=DESCRIPTION)
    guarded = [Depends(bearer_check(token_sha256))]
    install_error_handlers(app)
    install_guard(app, service.config.max_request_bytes)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Health:
        return service.health()

    @app.get("/v1/models", tags=["openai"], dependencies=guarded, responses=ERRORS)
    async def list_models() -> ModelList:
        return service.model_list()

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
        """OpenAI-compatible. stream=true sends the whole completion as one chunk, then [DONE]."""
        completion = await service.chat(request)
        if request.stream:
            return StreamingResponse(_stream(completion), media_type="text/event-stream")
        return completion

    return app


def bearer_check(token_sha256: str | None) -> Callable[..., Awaitable[None]]:
    """A dependency that refuses a request without the bearer token whose SHA-256 is `token_sha256`."""

    async def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> None:
        if token_sha256 is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).hexdigest(), token_sha256):
            raise Unauthorized()

    return authorize


def install_guard(app: FastAPI, max_request_bytes: int) -> None:
    """Refuse a body over max_request_bytes before reading it; count every request and its latency."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        began = time.monotonic()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_request_bytes:
            response: Any = body_too_large(length, max_request_bytes)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        count("serve_requests", endpoint=endpoint, status=str(response.status_code))
        try:
            metric("serve_latency_s").observe(time.monotonic() - began, tags={"endpoint": endpoint})
        except Exception as error:  # metrics must never break the work they describe
            log.warning("metric serve_latency_s not recorded: %s", error)
        return response


async def _stream(completion: ChatCompletion) -> AsyncIterator[str]:
    base = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
            "model": completion.model}
    for choice in completion.choices:
        delta = {"role": "assistant", "content": choice.message.content}
        yield _event({**base, "choices": [{"index": choice.index, "delta": delta, "finish_reason": None}]})
        end = {"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}
        yield _event({**base, "choices": [end]})
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("socialalign")
    except PackageNotFoundError:
        return "0"
