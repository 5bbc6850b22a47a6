"""Answering from inside the ASGI edge (before any route), in the path's dialect."""

import json

from starlette.types import Send

from api.core.dialect import Dialects
from shared.errors import DEFAULT_RETRY_AFTER_S, RETRY_AFTER_S


async def send_error(
    send: Send,
    dialects: Dialects,
    path: str,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | tuple = (),
) -> None:
    """A whole JSON error response, in the error shape of the dialect that owns ``path``; a
    503 always says when to come back (``Retry-After``)."""
    body = json.dumps(dialects.error_body(path, status, code, message)).encode()
    fields = [(b"content-type", b"application/json"), *headers]
    if status == 503 and not any(name.lower() == b"retry-after" for name, _ in fields):
        seconds = RETRY_AFTER_S.get(code, DEFAULT_RETRY_AFTER_S)  # type: ignore[call-overload]
        fields.append((b"retry-after", str(seconds).encode()))
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})
