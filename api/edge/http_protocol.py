"""Limits at the HTTP edge, below the ASGI app: how big a request's head may be and how long
it may take to arrive.

uvicorn buffers a request's head (request line and headers) without a bound and waits for it
without a deadline, so a few huge headers exhaust memory and a thousand idle or half-sent
connections starve real requests. This protocol answers 431 once a head passes
``MLXQ_MAX_HEADER_BYTES`` and 408 when a head has not arrived within ``MLXQ_HEADER_TIMEOUT``
(also on a fresh connection that sends nothing). Idle keep-alive time and the number of
connections are uvicorn's own settings (``timeout_keep_alive``, ``limit_concurrency``).
"""

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("mlxq.api")

MAX_OPEN_FILES = 65_536
"""The soft limit asked for where the hard one is unlimited."""
_STATUS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpProtocol(HttpToolsProtocol):
    max_head_bytes = 65_536
    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head and self.cycle is not None and self.cycle.response_complete:
            self._start_head()  # the next request on a kept-alive connection
        counting = self._in_head
        super().data_received(data)
        # Still in the head after this chunk (a chunk that completes it may carry the body's
        # first bytes too, which do not count): past the bound, refuse before buffering more.
        if counting and self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"Request head over {self.max_head_bytes} bytes.")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._stop_head_timer()
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"No complete request head within {self.head_timeout_s:g} s.")

    def _refuse(self, status: int, message: str) -> None:
        self._stop_head_timer()
        log.warning("refused a request: %s", message)
        body = message.encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _STATUS[status], len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


def guarded_protocol(max_head_bytes: int, head_timeout_s: float) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn runs (``http=``), with these limits."""
    return type(
        "MlxqHttpProtocol",
        (GuardedHttpProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s},
    )


def raise_open_file_limit() -> int:
    """Take the soft limit on open files up to the hard one: connections are files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS caps below "unlimited"
            return soft
    return target
