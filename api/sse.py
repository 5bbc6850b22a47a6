"""Server-Sent Events: framing, keep-alive comments, and the response that carries them."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Message, Send

from api.jobs import KEEPALIVE, JobRunner, Keepalive
from shared.schemas import GenerationRequest, JobEvent

log = logging.getLogger(__name__)

KEEPALIVE_FRAME = ": keep-alive\n\n"


def data_frame(data: str, event: str | None = None) -> str:
    """One SSE event; line breaks in ``data`` become several data lines, as SSE requires."""
    head = f"event: {event}\n" if event else ""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return head + "".join(f"data: {line}\n" for line in lines) + "\n"


def json_frame(payload: Any, event: str | None = None) -> str:
    return data_frame(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), event)


class JobStream:
    """A job's events for an SSE response.

    ``open`` waits for the first event, or one keep-alive interval (MLXQ_STREAM_KEEPALIVE),
    before the response starts: a job refused by then (a prompt too long for the context, no
    worker) is still an ordinary HTTP error; later errors become the stream's last event.
    """

    def __init__(self, first: JobEvent | Keepalive, rest: AsyncIterator[JobEvent | Keepalive]):
        self._first: JobEvent | Keepalive | None = first
        self._rest = rest

    @classmethod
    async def open(
        cls, runner: JobRunner, request: GenerationRequest, keepalive_s: float
    ) -> "JobStream":
        events = runner.events(request, keepalive_s=keepalive_s)
        return cls(await anext(events), events)

    async def __aiter__(self) -> AsyncIterator[JobEvent | Keepalive]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for item in self._rest:
            yield item

    async def aclose(self) -> None:
        await self._rest.aclose()  # type: ignore[attr-defined]


class _EventStream(StreamingResponse):
    """A stream whose client must keep reading: a write that waits longer than
    ``write_timeout_s`` (the client stopped reading, its buffers are full) ends the response,
    which closes the frames and so cancels the job."""

    def __init__(self, frames: AsyncIterator[str], write_timeout_s: float) -> None:
        super().__init__(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
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


def sse_response(frames: AsyncIterator[str], write_timeout_s: float) -> StreamingResponse:
    return _EventStream(frames, write_timeout_s)


__all__ = ["KEEPALIVE", "JobStream", "data_frame", "json_frame", "sse_response"]
