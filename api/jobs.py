"""Running one generation job from the API's side: enqueue, wait with deadlines, yield events.

Every route (/ask now, the OpenAI routes later) goes through ``JobRunner.events``.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.events import EventHub, JobEvents
from api.submit import JobSubmitter
from shared.errors import JobTimedOut, MlxqError, NoWorkerAvailable, RedisUnavailable
from shared.schemas import DoneEvent, ErrorEvent, GenerationRequest, JobEvent, StartedEvent
from shared.settings import Settings

RESULT_GRACE_S = 10.0
"""Extra wait past the job timeout, for the worker's own timeout error to arrive first."""


class JobRunner:
    def __init__(
        self, connection: aioredis.Redis, hub: EventHub, submitter: JobSubmitter, settings: Settings
    ) -> None:
        self._connection = connection
        self._hub = hub
        self._submitter = submitter
        self._settings = settings

    async def events(self, request: GenerationRequest) -> AsyncIterator[JobEvent]:
        """The job's events up to and including its final one; raises MlxqError on failure."""
        job_id = uuid.uuid4().hex
        try:
            async with self._hub.subscribe(job_id) as inbox:
                await self._submitter.enqueue(request, job_id)
                async for event in self._follow(job_id, JobEvents(job_id, inbox, self._connection)):
                    yield event
        except RedisError as exc:
            raise RedisUnavailable(f"Redis is unreachable: {exc}") from exc

    async def run(self, request: GenerationRequest) -> DoneEvent:
        """The job's final answer, for callers that do not stream."""
        async for event in self.events(request):
            if isinstance(event, DoneEvent):
                return event
        raise AssertionError("events() ends with a DoneEvent or raises")

    async def _follow(self, job_id: str, events: JobEvents) -> AsyncIterator[JobEvent]:
        loop = asyncio.get_running_loop()
        queue_deadline = loop.time() + self._settings.queue_timeout
        result_deadline = queue_deadline + self._settings.job_timeout + RESULT_GRACE_S
        started = False
        while True:
            deadline = result_deadline if started else queue_deadline
            event = await events.next(deadline - loop.time())
            if event is None:
                if started:
                    raise JobTimedOut(
                        f"No result within {self._settings.job_timeout} s of generation."
                    )
                if await self._submitter.withdraw(job_id):
                    raise NoWorkerAvailable(
                        f"No worker took the request within {self._settings.queue_timeout:g} s "
                        f"(queue {self._submitter.queue_name!r}). Is a worker for model "
                        f"{self._settings.model!r} running?"
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
