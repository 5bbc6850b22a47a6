"""The skeleton every generation route shares: run the job, then answer at once or stream."""

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.disconnect import unless_disconnected
from api.jobs import JobRunner
from api.sse import JobStream, sse_response
from shared.schemas import DoneEvent, GenerationRequest
from shared.settings import Settings

WORKER_HEADER = "x-mlxq-worker"
"""Names the worker that answered (non-streamed answers): which Mac, for operators."""

Answer = Callable[[DoneEvent], Any]
"""The whole answer of a non-streaming request, from the job's DoneEvent."""
Frames = Callable[[JobStream], AsyncIterator[str]]
"""The SSE frames of a streaming request, from the job's events."""


async def respond(
    http_request: Request,
    runner: JobRunner,
    request: GenerationRequest,
    settings: Settings,
    *,
    answer: Answer,
    frames: Frames,
) -> Any:
    """A non-streaming request waits for its answer (cancelled when the client leaves: 499);
    a streaming one starts its SSE response after the job's first event."""
    if not request.stream:
        done = await unless_disconnected(http_request, runner.run(request))
        if isinstance(done, Response):
            return done
        body = answer(done)
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        headers = {WORKER_HEADER: done.worker} if done.worker else None
        return JSONResponse(body, headers=headers)
    # Until its first event the response has not started, and no one else would notice a
    # client that leaves: watch for it here, so its job is dropped within a moment.
    stream = await unless_disconnected(
        http_request, JobStream.open(runner, request, settings.stream_keepalive)
    )
    if isinstance(stream, Response):
        return stream
    return sse_response(frames(stream), settings.stream_write_timeout)
