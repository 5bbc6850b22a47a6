"""Limits at the HTTP edge, below the ASGI app: how many connections the API holds (in all
and per client, api/edge/connections.py), how big a request's head may be and how long it may
take to arrive.

uvicorn buffers a request's head (request line and headers) without a bound and waits for it
without a deadline, so a few huge headers exhaust memory and a thousand idle or half-sent
connections starve real requests. This protocol refuses a connection over its budget at once
(503), answers 431 once a head passes ``MLXQ_MAX_HEADER_BYTES`` and 408 when a head has not
arrived within ``MLXQ_HEADER_TIMEOUT`` (also on a fresh connection that sends nothing). Each
refusal is JSON in mlxq's own error shape (``{"detail", "code"}``: the path, and so the
dialect, is not known yet). Idle keep-alive time is uvicorn's own ``timeout_keep_alive``.
"""

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.edge.connections import RETRY_AFTER_S, ConnectionBudget
from shared.errors import ErrorCode

log = logging.getLogger("mlxq.api")

MAX_OPEN_FILES = 65_536
"""The soft limit asked for where the hard one is unlimited."""
_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
_CODES = {
    408: ErrorCode.REQUEST_TIMEOUT,
    431: ErrorCode.HEADERS_TOO_LARGE,
    503: ErrorCode.OVERLOADED,
}
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class GuardedHttpProtocol(HttpToolsProtocol):
    max_head_bytes = 65_536
    head_timeout_s = 10.0
    budget = ConnectionBudget(max_total=1024, max_per_client=256)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_tail = b""
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._client = ""
        self._admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refused = self.budget.admit(self._client)
        if refused is not None:
            self._in_head = False
            self._refuse(503, self.budget.message(refused), retry_after_s=RETRY_AFTER_S)
            return
        self._admitted = True
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._admitted:
            self._admitted = False
            self.budget.release(self._client)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_head and self.cycle is not None and self.cycle.response_complete:
            self._start_head()  # the next request on a kept-alive connection
        if self._in_head and not self.transport.is_closing():
            # Counted before parsing, up to the head's end when this chunk completes it (the
            # body's first bytes may come with it and do not count).
            self._head_bytes += self._head_part(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"Request head over {self.max_head_bytes} bytes.")
                return
        super().data_received(data)

    def _head_part(self, data: bytes) -> int:
        """How many bytes of ``data`` belong to the head (a terminator may straddle two
        chunks: the last bytes of the previous one are kept)."""
        tail = self._head_tail
        seen = tail + data
        ends = [i + len(end) for end in _HEAD_ENDS if (i := seen.find(end)) >= 0]
        self._head_tail = seen[-3:]
        return len(data) if not ends else max(0, min(ends) - len(tail))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_tail = b""
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

    def _refuse(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        self._stop_head_timer()
        if status != 503:  # the budget logs its own refusals, a few at a time
            log.warning("refused a request: %s", message)
        body = json.dumps({"detail": message, "code": str(_CODES[status])}).encode()
        retry = b"retry-after: %d\r\n" % retry_after_s if retry_after_s is not None else b""
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n%s"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS[status], retry, len(body))
        )
        self.transport.write(head + body)
        self.transport.close()


def guarded_protocol(
    max_head_bytes: int, head_timeout_s: float, budget: ConnectionBudget
) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn runs (``http=``), with these limits."""
    return type(
        "MlxqHttpProtocol",
        (GuardedHttpProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s, "budget": budget},
    )


def raise_open_file_limit() -> int:
    """Take the soft limit on open files up to the hard one: connections are files. Returns
    the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else MAX_OPEN_FILES
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # macOS caps below "unlimited"
            return soft
    return target
