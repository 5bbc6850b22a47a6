"""Answering from inside the ASGI edge (before any route), in the path's dialect."""

import json

from starlette.types import Send

from api.core.dialect import Dialects


async def send_error(
    send: Send,
    dialects: Dialects,
    path: str,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | tuple = (),
) -> None:
    """A whole JSON error response, in the error shape of the dialect that owns ``path``."""
    body = json.dumps(dialects.error_body(path, status, code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
