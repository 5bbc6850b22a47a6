"""Translating errors to HTTP, once, at the edge, in the shape of the dialect that owns the path.

- mlxq's domain errors (``shared/errors.py``) carry their status and code;
- a body that fails validation is answered as its dialect wants it (a 400 naming the field,
  or FastAPI's 422 on /ask);
- FastAPI's own HTTP errors (an unknown route, a wrong method, a body that is not UTF-8) in
  the dialect's shape too;
- Redis unreachable in a route that reads it directly: 503, not 500.
"""

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from api.core.dialect import Dialects
from shared.errors import HTTP_STATUS, ErrorCode, MlxqError, RateLimited, RedisUnavailable

log = logging.getLogger(__name__)

ERROR_STATUSES: tuple[int, ...] = tuple(
    sorted(set(HTTP_STATUS.values()) - {HTTP_STATUS[ErrorCode.CANCELLED]})
)
"""What a request can be answered besides 200, from shared/errors.py (all but 499, which is
only logged: its client is gone). Routes document these."""
_HTTP_ERROR_CODES = {404: "not_found", 405: "method_not_allowed"}


def _dialects(request: Request) -> Dialects:
    return request.app.state.dialects


def error_response(request: Request, exc: MlxqError) -> JSONResponse:
    """The JSON answer of a domain error, in the request's dialect."""
    body = _dialects(request).error_body(
        request.url.path, exc.http_status, str(exc.code), exc.message, exc.partial
    )
    retry = exc.retry_after  # every 503 and 429 says when to come back
    headers = {"Retry-After": str(retry)} if retry is not None else {}
    if isinstance(exc, RateLimited):
        headers.update(exc.headers)  # the dialect's rate-limit headers
    return JSONResponse(body, status_code=exc.http_status, headers=headers or None)


async def _mlxq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlxqError)
    request_id = getattr(request.state, "request_id", "-")
    log.info("request %s failed: %s (%s)", request_id, exc.code, exc.http_status)
    return error_response(request, exc)


async def _invalid_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _dialects(request).of(request.url.path).invalid_input(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own 400 (a body it cannot parse, e.g. not UTF-8) in the dialect's shape, and
    any HTTP error of a dialect's own path (an unknown route, a wrong method); other HTTP
    errors (outside the dialects' prefixes) keep FastAPI's body."""
    assert isinstance(exc, HTTPException)
    path = request.url.path
    dialect = _dialects(request).of(path)
    if exc.status_code == 400:
        message = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):
            message = f"The request body is not valid UTF-8 ({exc.__cause__})."
        body = dialect.error_body(400, ErrorCode.INVALID_REQUEST, message, None)
        return JSONResponse(body, status_code=400, headers=exc.headers)
    if dialect.invalid_input_status == 400:  # a dialect with its own error shape
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        message = f"{request.method} {path}: {exc.detail}"
        body = dialect.error_body(exc.status_code, code, message, None)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return await http_exception_handler(request, exc)


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    """Redis unreachable in a route that reads it directly (the fleet queries): a 503, as
    for /ask, not a 500."""
    return await _mlxq_error(request, RedisUnavailable(f"Redis is unreachable: {exc}"))


async def _redis_full(request: Request, exc: Exception) -> JSONResponse:
    """Redis at its memory cap refuses writes (noeviction): a 503 anywhere, never a 500."""
    return await _mlxq_error(
        request,
        RedisUnavailable("Redis is full (maxmemory) and refuses writes; try again shortly."),
    )


def install_error_handlers(app: FastAPI, dialects: Dialects) -> None:
    app.state.dialects = dialects
    app.add_exception_handler(MlxqError, _mlxq_error)
    app.add_exception_handler(RequestValidationError, _invalid_input)
    app.add_exception_handler(HTTPException, _http_error)
    for unreachable in (redis.ConnectionError, redis.TimeoutError):
        app.add_exception_handler(unreachable, _redis_down)
    app.add_exception_handler(redis.exceptions.OutOfMemoryError, _redis_full)
