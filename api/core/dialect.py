"""What the core needs to know of each API dialect: which paths it owns and how its errors look.

Each dialect package (``api/dialects/*``) describes itself with one ``Dialect``; the app
registers them, most specific first, in a ``Dialects`` list. An error anywhere (a route, the
error handlers, the edge middleware) is then answered in the shape of the dialect that owns
the request's path: OpenAI's under /v1, Anthropic's on /v1/messages, Ollama's under /api,
mlxq's own ``{"detail", "code"}`` elsewhere.
"""

from collections.abc import Callable
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

ErrorBody = Callable[[int, str, str, str | None], dict]
"""(status, code, message, partial text) -> the dialect's error body."""
InvalidInput = Callable[[RequestValidationError], Response]
"""A request body that failed validation -> the dialect's answer (a 400, or FastAPI's 422)."""


@dataclass(frozen=True)
class Dialect:
    name: str
    owns: Callable[[str], bool]
    """Whether a request path belongs to this dialect."""
    error_body: ErrorBody
    invalid_input: InvalidInput
    invalid_input_status: int = 400
    """What ``invalid_input`` answers (documented in the OpenAPI schema)."""


class Dialects:
    """The registered dialects, most specific first, and one that owns every other path."""

    def __init__(self, specific: list[Dialect], fallback: Dialect) -> None:
        self._specific = specific
        self._fallback = fallback

    def of(self, path: str) -> Dialect:
        for dialect in self._specific:
            if dialect.owns(path):
                return dialect
        return self._fallback

    def error_body(
        self, path: str, status: int, code: str, message: str, partial: str | None = None
    ) -> dict:
        return self.of(path).error_body(status, code, message, partial)


def validation_summary(exc: RequestValidationError) -> str:
    """Every problem of an invalid body, as ``field: message``; ``body`` for the whole."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
        for e in exc.errors()
    )
