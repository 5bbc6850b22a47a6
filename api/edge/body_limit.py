"""The request body's size, arrival time and rate: 413 past the limit, 408 past the timeout,
429 past the client's send rate (api/edge/send_rate.py)."""

import asyncio
import math
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.dialect import Dialects
from api.edge.replies import send_error
from api.edge.send_rate import SendRate
from shared.errors import ErrorCode


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
        *,
        dialects: Dialects,
        send_rate: SendRate | None = None,
    ) -> None:
        """``upload_paths`` (file uploads) take bodies up to ``max_upload_bytes`` instead,
        and are not counted against a client's ``send_rate`` (None: no bound)."""
        self.app = app
        self._dialects = dialects
        self._send_rate = send_rate
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
            return await send_error(
                send, self._dialects, scope["path"], 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large
            )
        chunks, size = [], 0
        give_up_at = time.monotonic() + self._timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), give_up_at - time.monotonic())
            except TimeoutError:
                too_slow = f"The request body did not arrive within {self._timeout_s:g} s."
                return await send_error(
                    send, self._dialects, scope["path"], 408, ErrorCode.REQUEST_TIMEOUT, too_slow
                )
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                return await send_error(
                    send, self._dialects, scope["path"], 413, ErrorCode.PAYLOAD_TOO_LARGE, too_large
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if self._send_rate is not None and scope["path"] not in self._upload_paths:
            client = (scope.get("client") or ("unknown",))[0]
            wait_s = self._send_rate.take(client, size)
            if wait_s > 0:
                too_fast = (
                    f"This client sends more than {self._send_rate.bytes_per_s} bytes of request "
                    "bodies per second (MLXQ_MAX_CLIENT_BYTES_PER_SECOND); try again shortly."
                )
                retry = [(b"retry-after", str(max(1, math.ceil(wait_s))).encode())]
                return await send_error(
                    send,
                    self._dialects,
                    scope["path"],
                    429,
                    ErrorCode.RATE_LIMITED,
                    too_fast,
                    retry,
                )
        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if body_sent:
                return await receive()
            body_sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
