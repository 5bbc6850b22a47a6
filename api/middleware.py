"""The API's edge, as plain ASGI middleware (no BaseHTTPMiddleware: it buffers and hides
client disconnects): request ids and timings, the API key, and the body size limit."""

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body
from shared.errors import ErrorCode

log = logging.getLogger("mlxq.api")

OPEN_PATHS = frozenset({"/health", "/"})
"""Reachable without the API key: the liveness check (for supervisors and load balancers),
and the web page with its static files, which hold no secrets and send the key themselves."""
OPEN_PREFIXES = ("/static/",)


async def _send_error(send: Send, path: str, status: int, code: str, message: str, headers=()):
    body = json.dumps(error_body(path, status, code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127)}


def _printable(path: str) -> str:
    """A path as it may go into a log line: control characters escaped, so that a request
    cannot forge log lines (a decoded %0a in its path)."""
    return path.translate(_CONTROL)


class RequestLog:
    """One log line per request: id, method, path, status, time. Never the body. Also counts
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
            log.info(
                "%s %s %s -> %s in %.1f ms",
                request_id,
                scope["method"],
                _printable(scope["path"]),
                status or "disconnected",
                (time.perf_counter() - started) * 1000,
            )


class ApiKey:
    """With MLXQ_API_KEY set, every route but OPEN_PATHS needs ``Authorization: Bearer <key>``
    (as OpenAI clients send it), compared in constant time."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._expected = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        if hmac.compare_digest(_given_key(scope["headers"]), self._expected):
            return await self.app(scope, receive, send)
        await _send_error(
            send,
            scope["path"],
            401,
            ErrorCode.UNAUTHORIZED,
            "Missing or wrong API key: send 'Authorization: Bearer <MLXQ_API_KEY>'.",
            [(b"www-authenticate", b"Bearer")],
        )


def _given_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The key a client sent: ``Authorization: Bearer <key>`` (the scheme in any case, as
    HTTP says) or Anthropic's ``x-api-key: <key>``."""
    fields = dict(headers)
    scheme, _, token = fields.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer":
        return token.strip()
    return fields.get(b"x-api-key", b"").strip()


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with a 413: by Content-Length before reading, or while
    reading when the length was not announced. The body is read here (FastAPI would read it
    whole anyway) and handed on; later receives reach the client, so disconnects still show."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float,
        upload_paths: frozenset[str] = frozenset(),
        max_upload_bytes: int = 0,
    ) -> None:
        """``upload_paths`` (file uploads) take bodies up to ``max_upload_bytes`` instead."""
        self.app = app
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._upload_paths = upload_paths
        self._max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        max_bytes, setting = self._max_bytes, "MLXQ_MAX_BODY_BYTES"
        if scope["path"] in self._upload_paths:
            max_bytes, setting = self._max_upload_bytes, "MLXQ_MAX_FILE_BYTES"
        too_large = f"The request body is larger than {max_bytes} bytes ({setting})."
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            return await _send_error(
                send, scope["path"], 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large
            )
        chunks, size = [], 0
        give_up_at = time.monotonic() + self._timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), give_up_at - time.monotonic())
            except TimeoutError:
                too_slow = f"The request body did not arrive within {self._timeout_s:g} s."
                return await _send_error(
                    send, scope["path"], 408, ErrorCode.REQUEST_TIMEOUT, too_slow
                )
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                return await _send_error(
                    send, scope["path"], 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if body_sent:
                return await receive()
            body_sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class HostGuard:
    """Without an API key, only requests addressed to this server's own names are served:
    a web page cannot reach a loopback API through a name it rebinds to 127.0.0.1 (DNS
    rebinding), as Ollama checks since its advisory. A browser's ``Origin`` must be one of
    those names too, or a CORS origin that was allowed."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], origins: frozenset[str]) -> None:
        self.app = app
        self._hosts = hosts
        self._origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = _hostname(headers.get(b"host", b"").decode("latin-1"))
        origin = headers.get(b"origin", b"").decode("latin-1")
        if host not in self._hosts:
            why = f"Host {host!r} is not one of this server's names (MLXQ_ALLOWED_HOSTS)."
        elif origin and origin not in self._origins and _origin_host(origin) not in self._hosts:
            why = f"Origin {origin!r} may not use this server (MLXQ_CORS_ORIGINS)."
        else:
            return await self.app(scope, receive, send)
        await _send_error(send, scope["path"], 403, ErrorCode.FORBIDDEN, why)


def _hostname(host: str) -> str:
    """``host[:port]`` or ``[v6][:port]`` without the port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_host(origin: str) -> str:
    return _hostname(origin.split("://", 1)[-1].split("/", 1)[0])
