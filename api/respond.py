"""The skeleton every generation route shares: run the job, then answer at once or stream."""

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from api.disconnect import unless_disconnected
from api.jobs import JobRunner
from api.sse import JobStream, sse_response
from shared.schemas import DoneEvent, GenerationRequest

Answer = Callable[[DoneEvent], Any]
"""The whole answer of a non-streaming request, from the job's DoneEvent."""
Frames = Callable[[JobStream], AsyncIterator[str]]
"""The SSE frames of a streaming request, from the job's events."""


async def respond(
    http_request: Request,
    runner: JobRunner,
    request: GenerationRequest,
    keepalive_s: float,
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
        return answer(done)
    stream = await JobStream.open(runner, request, keepalive_s)
    return sse_response(frames(stream))
