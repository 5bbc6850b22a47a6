"""Streaming a job's events: one driver for every dialect, in SSE or NDJSON framing.

A dialect writes a ``StreamRenderer``: what to send when the stream opens, for each piece of
text, at the end, on keep-alive and on an error. ``frames`` drives it over the job's events,
and ``StreamResponse`` carries the frames to a client that must keep reading. The framings:

- **SSE** (OpenAI, Anthropic, Responses, /ask): ``data:`` lines, ``event:`` names, and
  ``: keep-alive`` comments while a job waits;
- **NDJSON** (Ollama): one JSON object a line, no comments (keep-alives are dropped).
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Message, Send

from api.core.runner import KEEPALIVE, JobRunner, Keepalive
from shared.errors import MlxqError
from shared.schemas import DoneEvent, JobEvent, JobRequest, StartedEvent, TokenEvent

log = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
SSE_KEEPALIVE = ": keep-alive\n\n"


def sse_frame(data: str, event: str | None = None) -> str:
    """One SSE event; line breaks in ``data`` become several data lines, as SSE requires."""
    head = f"event: {event}\n" if event else ""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return head + "".join(f"data: {line}\n" for line in lines) + "\n"


def _json(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def sse_json(payload: Any, event: str | None = None) -> str:
    """One SSE event whose data is ``payload`` as JSON."""
    return sse_frame(_json(payload), event)


def ndjson_line(payload: Any) -> str:
    return _json(payload) + "\n"


class StreamRenderer:
    """How one dialect writes a stream: each method returns the frames to send (strings in
    the renderer's framing). The defaults send nothing but SSE keep-alive comments."""

    media_type = SSE_MEDIA_TYPE

    def opening(self) -> Iterable[str]:
        return ()

    def started(self, event: StartedEvent) -> Iterable[str]:
        """A worker took the job (a dialect may time it)."""
        return ()

    def keepalive(self) -> Iterable[str]:
        return (SSE_KEEPALIVE,)

    def token(self, event: TokenEvent) -> Iterable[str]:
        return ()

    def done(self, event: DoneEvent) -> Iterable[str]:
        return ()

    def closing(self) -> Iterable[str]:
        """After the answer (OpenAI's ``data: [DONE]``)."""
        return ()

    def error(self, exc: MlxqError) -> Iterable[str]:
        """After the response began, an error is the stream's last frame."""
        return ()


class NdjsonRenderer(StreamRenderer):
    """NDJSON has no comments: keep-alives are dropped (Ollama sends none either)."""

    media_type = NDJSON_MEDIA_TYPE

    def keepalive(self) -> Iterable[str]:
        return ()


class JobStream:
    """A job's events for a streamed response.

    ``open`` waits for the first event, or one keep-alive interval (MLXQ_STREAM_KEEPALIVE),
    before the response starts: a job refused by then (a prompt too long for the context, no
    worker) is still an ordinary HTTP error; later errors become the stream's last frame.
    """

    def __init__(
        self,
        first: JobEvent | Keepalive,
        rest: AsyncIterator[JobEvent | Keepalive],
        on_end: Callable[[], Awaitable[None]] | None = None,
    ):
        self._first: JobEvent | Keepalive | None = first
        self.first = first
        """The job's first event (or a keep-alive), which the response waited for."""
        self._rest = rest
        self._on_end = on_end

    @classmethod
    async def open(
        cls,
        runner: JobRunner,
        request: JobRequest,
        keepalive_s: float,
        on_end: Callable[[], Awaitable[None]] | None = None,
    ) -> "JobStream":
        """``on_end``: called when the stream closes (and by the runner, should it never
        be closed)."""
        events = runner.events(request, keepalive_s=keepalive_s, on_end=on_end)
        return cls(await anext(events), events, on_end)

    async def __aiter__(self) -> AsyncIterator[JobEvent | Keepalive]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for item in self._rest:
            yield item

    async def aclose(self) -> None:
        await self._rest.aclose()  # type: ignore[attr-defined]
        if self._on_end is not None:
            await self._on_end()


async def frames(stream: JobStream, renderer: StreamRenderer) -> AsyncIterator[str]:
    """The renderer's frames over the job's events; closing them cancels the job."""
    try:
        for frame in renderer.opening():
            yield frame
        async for item in stream:
            out: Iterable[str] = ()
            if item is KEEPALIVE:
                out = renderer.keepalive()
            elif isinstance(item, StartedEvent):
                out = renderer.started(item)
            elif isinstance(item, TokenEvent):
                out = renderer.token(item)
            elif isinstance(item, DoneEvent):
                out = renderer.done(item)
            for frame in out:
                yield frame
        for frame in renderer.closing():
            yield frame
    except MlxqError as exc:
        for frame in renderer.error(exc):
            yield frame
    finally:
        await stream.aclose()


class StreamResponse(StreamingResponse):
    """A stream whose client must keep reading: a write that waits longer than
    ``write_timeout_s`` (the client stopped reading, its buffers are full) ends the response,
    which closes the frames and so cancels the job."""

    def __init__(
        self,
        frames: AsyncIterator[str],
        write_timeout_s: float,
        media_type: str = SSE_MEDIA_TYPE,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            frames,
            media_type=media_type,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )
        self._write_timeout_s = write_timeout_s
        self._frames = frames

    async def stream_response(self, send: Send) -> None:
        async def send_in_time(message: Message) -> None:
            await asyncio.wait_for(send(message), self._write_timeout_s)

        try:
            await super().stream_response(send_in_time)
        except TimeoutError:
            log.warning("a stream's client stopped reading for %gs; dropped", self._write_timeout_s)
            await self._frames.aclose()  # type: ignore[attr-defined]
