"""Running one generation job from the API's side: enqueue, wait with deadlines, yield events.

Every route (/ask, /v1/chat/completions, /v1/completions, streaming or not) goes through
``JobRunner.events``. A job whose consumer stops early (the client went away, a deadline)
is cancelled: dropped from the queue, or stopped by its worker within one decode step.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.events import EventHub, JobEvents
from api.metrics import Metrics
from api.submit import JobSubmitter
from shared.errors import JobTimedOut, MlxqError, NoWorkerAvailable, RedisUnavailable
from shared.schemas import (
    DoneEvent,
    ErrorEvent,
    GenerationRequest,
    JobEvent,
    StartedEvent,
    TokenEvent,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

RESULT_GRACE_S = 5.0
"""Extra wait past the deadline, for the worker's own timeout error to arrive first."""


class Keepalive:
    """Yielded by ``events`` after ``keepalive_s`` without an event (a stream sends a comment)."""


KEEPALIVE: Final = Keepalive()


class JobRunner:
    def __init__(
        self,
        connection: aioredis.Redis,
        hub: EventHub,
        submitter: JobSubmitter,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self._connection = connection
        self._hub = hub
        self._submitter = submitter
        self._settings = settings
        self._metrics = metrics
        self._background: set[asyncio.Task] = set()

    async def events(
        self, request: GenerationRequest, keepalive_s: float | None = None
    ) -> AsyncIterator[JobEvent | Keepalive]:
        """The job's events up to and including its DoneEvent; raises MlxqError on failure."""
        job_id = uuid.uuid4().hex
        finished = False
        try:
            async with self._hub.subscribe(job_id) as inbox:
                await self._submitter.enqueue(request, job_id)
                events = JobEvents(job_id, inbox, self._connection)
                async for event in self._follow(job_id, request, events, keepalive_s):
                    finished = isinstance(event, DoneEvent)
                    yield event
        except MlxqError as exc:
            finished = not isinstance(exc, JobTimedOut)  # a timed-out job may still be running
            raise
        except RedisError as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc
        finally:
            if not finished:
                self._cancel_later(request.model, job_id)

    async def run(self, request: GenerationRequest) -> DoneEvent:
        """The job's final answer, for callers that do not stream."""
        async for event in self.events(request):
            if isinstance(event, DoneEvent):
                return event
        raise AssertionError("events() ends with a DoneEvent or raises")

    def _cancel_later(self, model: str, job_id: str) -> None:
        """Cancel in a task of its own: this runs while the request's task is cancelled."""

        async def cancel() -> None:
            try:
                await self._submitter.cancel(model, job_id)
            except RedisError as exc:
                log.warning("could not cancel job %s: %s", job_id, exc)

        task = asyncio.create_task(cancel())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _follow(
        self,
        job_id: str,
        request: GenerationRequest,
        events: JobEvents,
        keepalive_s: float | None,
    ) -> AsyncIterator[JobEvent | Keepalive]:
        loop = asyncio.get_running_loop()
        enqueued_at = loop.time()
        deadline = enqueued_at + (request.deadline - time.time())
        queue_deadline = min(enqueued_at + self._settings.queue_timeout, deadline)
        started = False
        first_token = True
        while True:
            until = deadline + RESULT_GRACE_S if started else queue_deadline
            wait = until - loop.time()
            if keepalive_s is not None:
                wait = min(wait, keepalive_s)
            event = await events.next(wait)
            if event is None:
                if loop.time() < until:
                    yield KEEPALIVE
                    continue
                if started:
                    raise JobTimedOut("The request's deadline passed before the answer was ready.")
                if await self._submitter.withdraw(request.model, job_id):
                    raise self._queue_timeout_error(request, deadline_passed=until >= deadline)
                started = True  # a worker took it just now: wait for its answer
                continue
            if isinstance(event, StartedEvent):
                started = True
                self._metrics.queue_wait.observe(loop.time() - enqueued_at)
            elif isinstance(event, TokenEvent) and first_token:
                first_token = False
                self._metrics.first_token.observe(loop.time() - enqueued_at)
            elif isinstance(event, DoneEvent):
                self._metrics.tokens.labels(model=request.model).inc(event.completion_tokens)
            if isinstance(event, ErrorEvent):
                raise MlxqError(event.message, code=event.code)
            yield event
            if isinstance(event, DoneEvent):
                return

    def _queue_timeout_error(self, request: GenerationRequest, deadline_passed: bool) -> MlxqError:
        if deadline_passed:
            return JobTimedOut("The request's deadline passed while it waited in the queue.")
        return NoWorkerAvailable(
            f"No worker took the request within {self._settings.queue_timeout:g} s. "
            f"Is a worker for model {request.model!r} running?"
        )
