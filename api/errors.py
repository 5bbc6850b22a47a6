"""Translating errors to HTTP, once, at the edge.

- /ask: ``{"detail": message, "code": code}`` (and FastAPI's 422 body for invalid input).
- /v1/*: OpenAI's ``{"error": {"message", "type", "param", "code"}}``; invalid input is a 400.
"""

import json
import logging
import math
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from shared.errors import ErrorCode, MlxqError, QueueFull, RedisUnavailable

log = logging.getLogger(__name__)


OPENAI_PREFIX = "/v1/"
ANTHROPIC_PREFIX = "/v1/messages"
OLLAMA_PREFIX = "/api/"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def is_openai_route(path: str) -> bool:
    """Routes under /v1 answer errors in OpenAI's shape (but Anthropic's /v1/messages)."""
    return path.startswith(OPENAI_PREFIX) and not is_anthropic_route(path)


def is_anthropic_route(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def is_ollama_route(path: str) -> bool:
    return path.startswith(OLLAMA_PREFIX)


def _is_openai(request: Request) -> bool:
    return is_openai_route(request.url.path)


def openai_error(message: str, status: int, code: str, param: str | None = None) -> dict:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_body(path: str, status: int, code: str, message: str, partial: str | None = None) -> dict:
    """The one error body of a route, in its dialect: OpenAI's under /v1, Anthropic's on
    /v1/messages, Ollama's under /api, ``{"detail", "code"}`` elsewhere. Text generated
    before a deadline comes with the error."""
    if is_anthropic_route(path):
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if is_ollama_route(path):
        return {"error": message}
    if is_openai_route(path):
        body = openai_error(message, status, code)
        if partial is not None:
            body["error"]["partial_content"] = partial
        return body
    body = {"detail": message, "code": code}
    if partial is not None:
        body["partial_answer"] = partial
    return body


def openai_error_for(exc: MlxqError) -> dict:
    param = "model" if exc.code == "model_not_found" else None
    body = openai_error(exc.message, exc.http_status, str(exc.code), param)
    if exc.partial is not None:
        body["error"]["partial_content"] = exc.partial
    return body


async def _mlxq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlxqError)
    request_id = getattr(request.state, "request_id", "-")
    log.info("request %s failed: %s (%s)", request_id, exc.code, exc.http_status)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    if _is_openai(request):
        body = openai_error_for(exc)
    else:
        body = error_body(
            request.url.path, exc.http_status, str(exc.code), exc.message, exc.partial
        )
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


class _AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped. FastAPI's 422 body echoes the input, which
    may hold a lone surrogate (from a ``\\ud800`` escape) that UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    """The 422 body echoes the input; JSON has no NaN or Infinity, so those become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    path = request.url.path
    if is_anthropic_route(path) or is_ollama_route(path):
        return JSONResponse(error_body(path, 400, "invalid_request", _summary(exc)), 400)
    if not _is_openai(request):
        detail = _finite(jsonable_encoder(exc.errors()))
        return _AsciiJSONResponse({"detail": detail}, status_code=422)
    problems = exc.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
        for e in problems
    )
    return JSONResponse(openai_error(message, 400, "invalid_request", param), status_code=400)


def _summary(exc: RequestValidationError) -> str:
    """Every problem of an invalid body, as ``field: message``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
        for e in exc.errors()
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own 400 (a body it cannot parse, e.g. not UTF-8) in mlxq's error shapes, and
    any HTTP error under /v1 (an unknown route, a wrong method) in OpenAI's; other HTTP
    errors outside /v1 keep FastAPI's body."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        message = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            message = f"The request body is not valid UTF-8 ({exc.__cause__})."
        body = error_body(request.url.path, 400, ErrorCode.INVALID_REQUEST, message)
        return JSONResponse(body, status_code=400, headers=exc.headers)
    path = request.url.path
    if is_openai_route(path) or is_anthropic_route(path) or is_ollama_route(path):
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        message = f"{request.method} {path}: {exc.detail}"
        body = error_body(path, exc.status_code, code, message)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return await http_exception_handler(request, exc)


_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis unreachable in a route that reads it directly (the fleet queries): a 503, as
    for /ask, not a 500."""
    return await _mlxq_error(request, RedisUnavailable(f"Redis is unreachable: {exc}"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MlxqError, _mlxq_error)
    app.add_exception_handler(RequestValidationError, _invalid_input)
    app.add_exception_handler(HTTPException, _http_error)
    for unreachable in (redis.ConnectionError, redis.TimeoutError):
        app.add_exception_handler(unreachable, _redis_down)
