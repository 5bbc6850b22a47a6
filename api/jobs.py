"""Running one generation job from the API's side: enqueue, wait with deadlines, yield events.

Every route (/ask, /v1/chat/completions, /v1/completions, streaming or not) goes through
``JobRunner.events``.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.events import EventHub, JobEvents
from api.submit import JobSubmitter
from shared.errors import JobTimedOut, MlxqError, NoWorkerAvailable, RedisUnavailable
from shared.schemas import DoneEvent, ErrorEvent, GenerationRequest, JobEvent, StartedEvent
from shared.settings import Settings

RESULT_GRACE_S = 10.0
"""Extra wait past the job timeout, for the worker's own timeout error to arrive first."""


class Keepalive:
    """Yielded by ``events`` after ``keepalive_s`` without an event (a stream sends a comment)."""


KEEPALIVE: Final = Keepalive()


class JobRunner:
    def __init__(
        self, connection: aioredis.Redis, hub: EventHub, submitter: JobSubmitter, settings: Settings
    ) -> None:
        self._connection = connection
        self._hub = hub
        self._submitter = submitter
        self._settings = settings

    async def events(
        self, request: GenerationRequest, keepalive_s: float | None = None
    ) -> AsyncIterator[JobEvent | Keepalive]:
        """The job's events up to and including its DoneEvent; raises MlxqError on failure."""
        job_id = uuid.uuid4().hex
        try:
            async with self._hub.subscribe(job_id) as inbox:
                await self._submitter.enqueue(request, job_id)
                events = JobEvents(job_id, inbox, self._connection)
                async for event in self._follow(job_id, request, events, keepalive_s):
                    yield event
        except RedisError as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc

    async def run(self, request: GenerationRequest) -> DoneEvent:
        """The job's final answer, for callers that do not stream."""
        async for event in self.events(request):
            if isinstance(event, DoneEvent):
                return event
        raise AssertionError("events() ends with a DoneEvent or raises")

    async def _follow(
        self,
        job_id: str,
        request: GenerationRequest,
        events: JobEvents,
        keepalive_s: float | None,
    ) -> AsyncIterator[JobEvent | Keepalive]:
        loop = asyncio.get_running_loop()
        queue_deadline = loop.time() + self._settings.queue_timeout
        result_deadline = queue_deadline + self._settings.job_timeout + RESULT_GRACE_S
        started = False
        while True:
            deadline = result_deadline if started else queue_deadline
            wait = deadline - loop.time()
            if keepalive_s is not None:
                wait = min(wait, keepalive_s)
            event = await events.next(wait)
            if event is None:
                if loop.time() < deadline:
                    yield KEEPALIVE
                    continue
                if started:
                    raise JobTimedOut(
                        f"No result within {self._settings.job_timeout} s of generation."
                    )
                if await self._submitter.withdraw(request.model, job_id):
                    raise NoWorkerAvailable(
                        f"No worker took the request within {self._settings.queue_timeout:g} s. "
                        f"Is a worker for model {request.model!r} running?"
                    )
                started = True  # a worker took it just now: wait for its answer
                continue
            if isinstance(event, StartedEvent):
                started = True
            if isinstance(event, ErrorEvent):
                raise MlxqError(event.message, code=event.code)
            yield event
            if isinstance(event, DoneEvent):
                return
