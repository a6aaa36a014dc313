"""Errors as the HTTP API answers them: FastAPI's field-level `detail` and OpenAI's `error` object
in one body, so both kinds of client read it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from serve.protocol import InvalidPrompt, LimitExceeded, UnknownModel


def error_response(
    status: int, detail: Any, message: str, kind: str, param: str | None = None, code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"detail": detail, "error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_errors(items: list[dict[str, Any]], status: int, kind: str, code: str | None = None) -> JSONResponse:
    """An error naming each field (`loc`), its message joined into the OpenAI message."""
    message = "; ".join(f"{'.'.join(str(p) for p in item['loc'][1:]) or 'body'}: {item['msg']}" for item in items)
    param = (".".join(str(p) for p in items[0]["loc"][1:]) or None) if items else None
    return error_response(status, items, message, kind, param, code)


def body_too_large(size: int, max_request_bytes: int, declared: bool) -> JSONResponse:
    """413 for a body over the limit: by its Content-Length (not read), or counted as it streamed in."""
    said = f"request body is {size} bytes" if declared else f"request body passed {size} bytes"
    item = {"loc": ["body"], "type": "limit_exceeded",
            "msg": f"{said}, more than max_request_bytes={max_request_bytes}",
            "ctx": {"limit": "max_request_bytes", "max": max_request_bytes}}
    return field_errors([item], 413, "invalid_request_error", code="max_request_bytes")


def bad_length() -> JSONResponse:
    message = "Content-Length must be a number of bytes"
    return error_response(400, message, message, "invalid_request_error", None, "invalid_content_length")


def unauthorized() -> JSONResponse:
    message = "missing or invalid bearer token"
    return error_response(401, message, message, "authentication_error", None, "invalid_api_key",
                          {"WWW-Authenticate": "Bearer"})


def install_error_handlers(app: FastAPI) -> None:
    """422 invalid input, 413 a limit, 404 unknown model, 503 overloaded or a replica lost (401 and a body's
    413: api.Guard)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Field-level messages without echoing the input (it may be huge, or not encodable).
        items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return field_errors(items, 422, "invalid_request_error")

    @app.exception_handler(InvalidPrompt)
    async def invalid_prompt(_: Request, exc: InvalidPrompt) -> JSONResponse:
        return field_errors([{"loc": list(exc.loc), "msg": exc.message, "type": "invalid_prompt"}], 422,
                            "invalid_request_error")

    @app.exception_handler(LimitExceeded)
    async def too_large(_: Request, exc: LimitExceeded) -> JSONResponse:
        item = {"loc": list(exc.loc), "msg": exc.message, "type": "limit_exceeded",
                "ctx": {"limit": exc.limit, "max": exc.maximum}}
        return field_errors([item], 413, "invalid_request_error", code=exc.limit)

    @app.exception_handler(UnknownModel)
    async def unknown_model(_: Request, exc: UnknownModel) -> JSONResponse:
        return error_response(404, str(exc), str(exc), "invalid_request_error", "model", "model_not_found")

    @app.exception_handler(BackPressureError)
    async def overloaded(_: Request, exc: BackPressureError) -> JSONResponse:
        message = "overloaded: too many requests queued; retry later"
        return error_response(503, message, message, "server_error", None, "overloaded", {"Retry-After": "1"})

    @app.exception_handler(RayActorError)
    @app.exception_handler(ReplicaUnavailableError)
    @app.exception_handler(DeploymentUnavailableError)
    async def replica_lost(_: Request, exc: Exception) -> JSONResponse:
        # The Generator replica holding the request died or became unreachable (its node was lost):
        # Serve starts a new one, so this is a retry, not a failure of the request.
        message = "the model replica serving this request was lost; retry shortly"
        return error_response(503, message, message, "server_error", None, "replica_unavailable",
                              {"Retry-After": "2"})
