"""The response skeleton every dialect shares: run the job, then answer at once or stream.

A dialect gives the neutral request, how to write the whole answer from the job's
``DoneEvent``, and (for requests that may stream) its ``StreamRenderer``. Everything else is
the same for all of them: a client that leaves cancels its job (499 in the log), a stream
starts only after the job's first event, and a non-streamed answer names the worker that
gave it.
"""

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from api.access.accounting import Accounting
from api.access.headers import rate_limit_headers
from api.access.identity import Identity
from api.access.limits import Figures, RateLimiter, Ticket
from api.core.disconnect import unless_disconnected
from api.core.frames import JobStream, StreamRenderer, StreamResponse, frames
from api.core.models import resolve_model
from api.core.runner import JobRunner
from shared.errors import ModelNotFound, RateLimited
from shared.schemas import DoneEvent, JobEvent, JobRequest, StartedEvent
from shared.settings import Settings

log = logging.getLogger(__name__)

WORKER_HEADER = "x-mlxq-worker"
"""Names the worker that answered (non-streamed answers): which Mac, for operators."""
LOAD_HEADER = "x-mlxq-load-seconds"
"""Seconds the request waited for its model to load (0.000 when it was loaded): Ollama's
``load_duration`` for the dialects that have no field for it. Streams carry it when their
job started before the response began."""

Answer = Callable[[DoneEvent], Any]
"""The whole answer of a non-streaming request, from the job's DoneEvent (a dict or model)."""
Watch = Callable[[JobEvent], None]
"""Sees every event of a non-streamed job (a dialect that reports timings)."""


def worker_headers(done: DoneEvent) -> dict[str, str] | None:
    return {WORKER_HEADER: done.worker} if done.worker else None


def load_headers(started: StartedEvent | None) -> dict[str, str]:
    return {LOAD_HEADER: f"{started.load_s:.3f}"} if started is not None else {}


async def respond(
    http_request: Request,
    runner: JobRunner,
    request: JobRequest,
    settings: Settings,
    *,
    answer: Answer,
    renderer: StreamRenderer | None = None,
    watch: Watch | None = None,
    on_end: Callable[[], Awaitable[None]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A request that does not stream (or has no ``renderer``) waits for its answer,
    cancelled when the client leaves; a streaming one starts its response after the job's
    first event. ``on_end`` is called once the job is over, ``headers`` go on the answer."""
    streaming = renderer is not None and getattr(request, "stream", False)
    if not streaming:
        started: list[StartedEvent] = []

        def watching(event: JobEvent) -> None:
            if isinstance(event, StartedEvent):
                started.append(event)
            if watch is not None:
                watch(event)

        work = runner.run(request, watch=watching, on_end=on_end)
        done = await unless_disconnected(http_request, work)
        if isinstance(done, Response):
            return done
        body = answer(done)
        if isinstance(body, BaseModel):
            body = body.model_dump(mode="json")
        extra = {**(worker_headers(done) or {}), **load_headers(started[0] if started else None)}
        return JSONResponse(body, headers={**(headers or {}), **extra})
    assert renderer is not None
    # Until its first event the response has not started, and no one else would notice a
    # client that leaves: watch for it here, so its job is dropped within a moment.
    stream = await unless_disconnected(
        http_request, JobStream.open(runner, request, settings.stream_keepalive, on_end)
    )
    if isinstance(stream, Response):
        return stream
    first = stream.first if isinstance(stream.first, StartedEvent) else None
    return StreamResponse(
        frames(stream, renderer),
        settings.stream_write_timeout,
        renderer.media_type,
        {**(headers or {}), **load_headers(first)},
    )


@dataclass(frozen=True)
class JobExchange:
    """One HTTP request that runs a job, with what its route needs from the app: the model
    names it may use, the caller's identity and limits, and the response skeleton above.
    Routes take it as a dependency (api/deps.py: ``JobExchangeDep``)."""

    http_request: Request
    runner: JobRunner
    settings: Settings
    fleet: redis.Redis
    """A synchronous client, for the fleet queries (run in a thread)."""
    identity: Identity
    limiter: RateLimiter
    accounting: Accounting

    async def model(self, name: str) -> str:
        """The served model id ``name`` stands for, or ModelNotFound (404): also for a model
        the caller's key may not use (its existence is not confirmed)."""
        model = await resolve_model(self.fleet, self.settings, name)
        if not self.identity.may_use(model):
            raise ModelNotFound(
                f"The model {name!r} does not exist or this API key may not use it."
            )
        return model

    async def respond(
        self,
        request: JobRequest,
        *,
        answer: Answer,
        renderer: StreamRenderer | None = None,
        watch: Watch | None = None,
    ) -> Response:
        """Run the job under the caller's key: admitted by its limits (a 429 when over one),
        counted to it, waiting in its queue."""
        request = request.model_copy(update={"owner": self.identity.owner})
        ticket = await self._admit(request)
        release = functools.partial(self.limiter.release, ticket) if ticket else None
        headers = self._headers(ticket.figures) if ticket else None
        response = None
        try:
            response = await respond(
                self.http_request,
                self.runner,
                request,
                self.settings,
                answer=answer,
                renderer=renderer,
                watch=watch,
                on_end=release,
                headers=headers,
            )
            return response
        finally:
            if release is not None and not isinstance(response, StreamResponse):
                await release()  # a stream's slot is freed when the stream ends

    async def _admit(self, request: JobRequest) -> Ticket | None:
        """The caller's limits, for a made key (MLXQ_API_KEY and anonymous have none)."""
        if self.identity.record is None:
            return None
        verdict = await self.limiter.admit(self.identity.name, request.deadline)
        if isinstance(verdict, Ticket):
            return verdict
        self.accounting.refused.labels(key=self.identity.name, limit=verdict.limit).inc()
        log.info("key %s: refused by its %s limit", self.identity.name, verdict.limit)
        headers = self._headers(verdict.figures)
        raise RateLimited(verdict.message, verdict.retry_after_s, headers)

    def _headers(self, figures: Figures) -> dict[str, str]:
        dialect = self.http_request.app.state.dialects.of(self.http_request.url.path)
        return rate_limit_headers(figures, dialect.name)
