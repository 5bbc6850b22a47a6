"""Translating errors to HTTP, once, at the edge.

- /ask: ``{"detail": message, "code": code}`` (and FastAPI's 422 body for invalid input).
- /v1/*: OpenAI's ``{"error": {"message", "type", "param", "code"}}``; invalid input is a 400.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.errors import MlxqError, QueueFull

log = logging.getLogger(__name__)


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def openai_error(message: str, status: int, code: str, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error_for(exc: MlxqError) -> dict:
    param = "model" if exc.code == "model_not_found" else None
    return openai_error(exc.message, exc.http_status, str(exc.code), param)


async def _mlxq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlxqError)
    request_id = getattr(request.state, "request_id", "-")
    log.info("request %s failed: %s (%s)", request_id, exc.code, exc.http_status)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    if _is_openai(request):
        body = openai_error_for(exc)
    else:
        body = {"detail": exc.message, "code": str(exc.code)}
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if not _is_openai(request):
        return await request_validation_exception_handler(request, exc)
    problems = exc.errors()
    first = problems[0] if problems else {}
    param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    message = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
        for e in problems
    )
    return JSONResponse(openai_error(message, 400, "invalid_request", param), status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MlxqError, _mlxq_error)
    app.add_exception_handler(RequestValidationError, _invalid_input)
