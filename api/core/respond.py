"""The response skeleton every dialect shares: run the job, then answer at once or stream.

A dialect gives the neutral request, how to write the whole answer from the job's
``DoneEvent``, and (for requests that may stream) its ``StreamRenderer``. Everything else is
the same for all of them: a client that leaves cancels its job (499 in the log), a stream
starts only after the job's first event, and a non-streamed answer names the worker that
gave it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.core.disconnect import unless_disconnected
from api.core.frames import JobStream, StreamRenderer, StreamResponse, frames
from api.core.models import resolve_model
from api.core.runner import JobRunner
from shared.schemas import DoneEvent, JobEvent, JobRequest
from shared.settings import Settings

WORKER_HEADER = "x-mlxq-worker"
"""Names the worker that answered (non-streamed answers): which Mac, for operators."""

Answer = Callable[[DoneEvent], Any]
"""The whole answer of a non-streaming request, from the job's DoneEvent (a dict or model)."""
Watch = Callable[[JobEvent], None]
"""Sees every event of a non-streamed job (a dialect that reports timings)."""


def worker_headers(done: DoneEvent) -> dict[str, str] | None:
    return {WORKER_HEADER: done.worker} if done.worker else None


async def respond(
    http_request: Request,
    runner: JobRunner,
    request: JobRequest,
    settings: Settings,
    *,
    answer: Answer,
    renderer: StreamRenderer | None = None,
    watch: Watch | None = None,
) -> Response:
    """A request that does not stream (or has no ``renderer``) waits for its answer,
    cancelled when the client leaves; a streaming one starts its response after the job's
    first event."""
    streaming = renderer is not None and getattr(request, "stream", False)
    if not streaming:
        done = await unless_disconnected(http_request, runner.run(request, watch=watch))
        if isinstance(done, Response):
            return done
        body = answer(done)
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        return JSONResponse(body, headers=worker_headers(done))
    assert renderer is not None
    # Until its first event the response has not started, and no one else would notice a
    # client that leaves: watch for it here, so its job is dropped within a moment.
    stream = await unless_disconnected(
        http_request, JobStream.open(runner, request, settings.stream_keepalive)
    )
    if isinstance(stream, Response):
        return stream
    return StreamResponse(
        frames(stream, renderer), settings.stream_write_timeout, renderer.media_type
    )


@dataclass(frozen=True)
class JobExchange:
    """One HTTP request that runs a job, with what its route needs from the app: the model
    names it may use, and the response skeleton above. Routes take it as a dependency
    (api/deps.py: ``JobExchangeDep``)."""

    http_request: Request
    runner: JobRunner
    settings: Settings
    fleet: redis.Redis
    """A synchronous client, for the fleet queries (run in a thread)."""

    async def model(self, name: str) -> str:
        """The served model id ``name`` stands for, or ModelNotFound (404)."""
        return await resolve_model(self.fleet, self.settings, name)

    async def respond(
        self,
        request: JobRequest,
        *,
        answer: Answer,
        renderer: StreamRenderer | None = None,
        watch: Watch | None = None,
    ) -> Response:
        return await respond(
            self.http_request,
            self.runner,
            request,
            self.settings,
            answer=answer,
            renderer=renderer,
            watch=watch,
        )
