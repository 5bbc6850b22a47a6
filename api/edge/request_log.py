"""One log line per request, and its id on the response (``x-request-id``).

Plain ASGI middleware, as the rest of the edge (no BaseHTTPMiddleware: it buffers and hides
client disconnects)."""

import logging
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mlxq.api")

_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127)}


def _printable(path: str) -> str:
    """A path as it may go into a log line: control characters escaped, so that a request
    cannot forge log lines (a decoded %0a in its path)."""
    return path.translate(_CONTROL)


class RequestLog:
    """One log line per request: id, method, path, status, time, and the name of the API key
    it came with (set by api/edge/api_key.py; never the secret). Never the body. Also counts
    requests by route template and status (``count``)."""

    def __init__(self, app: ASGIApp, count: Callable[[str, str], None]) -> None:
        self.app = app
        self._count = count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            status = status or 500  # an unhandled error: the server answers 500
            raise
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self._count(route, str(status or "disconnected"))
            key = scope["state"].get("key")
            log.info(
                "%s %s %s -> %s in %.1f ms%s",
                request_id,
                scope["method"],
                _printable(scope["path"]),
                status or "disconnected",
                (time.perf_counter() - started) * 1000,
                f" key={key}" if key else "",
            )
