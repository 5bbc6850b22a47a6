"""``/ask``'s answers: whole, as Server-Sent Events, and mlxq's own error body.

Streamed, the answer is one event per piece of text (its data is the plain text; a line
break inside a piece is sent as SSE's multi-line data), then ``event: done`` with the whole
answer as JSON, or ``event: error`` with ``{"detail", "code"}``.
"""

import json
import math
from collections.abc import Iterable
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.core.frames import StreamRenderer, sse_frame, sse_json
from shared.errors import MlxqError
from shared.schemas import DoneEvent, TokenEvent


class AskStream(StreamRenderer):
    def token(self, event: TokenEvent) -> Iterable[str]:
        return [sse_frame(event.text)]

    def done(self, event: DoneEvent) -> Iterable[str]:
        done = {
            "answer": event.text,
            "finish_reason": event.finish_reason,
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "cached_tokens": event.cached_tokens,
        }
        if event.speculation is not None:
            done["speculation"] = event.speculation.model_dump()
        return [sse_json(done, event="done")]

    def error(self, exc: MlxqError) -> Iterable[str]:
        return [sse_json({"detail": exc.message, "code": str(exc.code)}, event="error")]


def error_body(status: int, code: str, message: str, partial: str | None = None) -> dict:
    """``{"detail": message, "code": code}``, with the text generated before a deadline."""
    body = {"detail": message, "code": code}
    if partial is not None:
        body["partial_answer"] = partial
    return body


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


def invalid_input(exc: RequestValidationError) -> Response:
    """FastAPI's own 422 body (the seed contract's), safe to encode whatever the input."""
    detail = _finite(jsonable_encoder(exc.errors()))
    return _AsciiJSONResponse({"detail": detail}, status_code=422)
