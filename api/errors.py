"""Translating domain errors to HTTP, once, at the edge: ``{"detail": message, "code": code}``."""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.errors import MlxqError

log = logging.getLogger(__name__)


async def _mlxq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MlxqError)
    log.info(
        "request %s failed: %s (%s)",
        getattr(request.state, "request_id", "-"),
        exc.code,
        exc.http_status,
    )
    return JSONResponse(
        status_code=exc.http_status, content={"detail": exc.message, "code": str(exc.code)}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MlxqError, _mlxq_error)
