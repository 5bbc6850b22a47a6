"""Enqueueing RQ jobs from the event loop without blocking it.

RQ's enqueue is synchronous. Rather than call it in a thread, ``JobSubmitter`` has RQ's own
``Queue.enqueue_job`` recorded (shared/rq_bridge.py) and replays the commands on
redis.asyncio in one MULTI/EXEC round trip. The job hash, queue list and registries come out
exactly as RQ writes them.
"""

import redis.asyncio as aioredis
from rq.job import Job
from rq.queue import Queue

from shared import protocol
from shared.errors import QueueFull
from shared.jobs import GENERATE_FUNCTION
from shared.keys import queue_name_for_model
from shared.rq_bridge import EnqueueRecorder, pushed_queue_length
from shared.schemas import GenerationRequest
from shared.settings import Settings

QUEUE_FULL_RETRY_AFTER_S = 2
"""Retry-After for a 429: a full queue drains in seconds on a busy fleet."""


class JobSubmitter:
    def __init__(self, connection: aioredis.Redis, settings: Settings) -> None:
        self._connection = connection
        self._settings = settings
        self._recorder = EnqueueRecorder()
        self._redis_version: tuple[int, int, int] | None = None

    def queue_name(self, model: str) -> str:
        """One queue per model; MLXQ_QUEUE renames the default model's queue."""
        if model == self._settings.model:
            return self._settings.queue_name
        return queue_name_for_model(model)

    async def enqueue(self, request: GenerationRequest, job_id: str) -> None:
        queue = await self._queue(request.model)
        job = queue.create_job(
            GENERATE_FUNCTION,
            kwargs={"request": request.model_dump(mode="json")},
            job_id=job_id,
            timeout=self._settings.job_timeout,
            result_ttl=self._settings.result_ttl,
            failure_ttl=self._settings.failure_ttl,
            description=f"generate {request.request_id}",
        )
        commands = self._recorder.enqueue_commands(queue, job)
        async with self._connection.pipeline(transaction=True) as pipeline:
            for args, options in commands:
                pipeline.execute_command(*args, **options)
            results = await pipeline.execute()
        await self._admit(request.model, job_id, pushed_queue_length(commands, results))

    async def _admit(self, model: str, job_id: str, queued: int) -> None:
        """Bound the queue fleet-wide: a job pushed past MLXQ_MAX_QUEUED is taken back out
        (unless a worker already took it) and refused, so memory stays bounded."""
        if queued <= self._settings.max_queued:
            return
        if await self.withdraw(model, job_id):
            raise QueueFull(
                f"The queue for {model!r} is full ({self._settings.max_queued} requests waiting, "
                "MLXQ_MAX_QUEUED); try again shortly.",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            )

    async def cancel(self, model: str, job_id: str) -> None:
        """The client went away: drop the job if still queued, else stop its generation."""
        if await self.withdraw(model, job_id):
            return
        async with self._connection.pipeline(transaction=False) as pipeline:
            protocol.add_cancel_request(pipeline, job_id, self._settings.event_ttl)
            await pipeline.execute()

    async def withdraw(self, model: str, job_id: str) -> bool:
        """Take a job back out of the queue; False when a worker has already taken it."""
        queue = await self._queue(model)
        removed = await self._connection.lrem(queue.key, 1, job_id)
        if removed:
            await self._connection.delete(Job.key_for(job_id))
        return bool(removed)

    async def _queue(self, model: str) -> Queue:
        return self._recorder.queue(self.queue_name(model), await self._server_version())

    async def _server_version(self) -> tuple[int, int, int]:
        if self._redis_version is None:
            info = await self._connection.info("server")
            major, minor, patch = (int(p) for p in str(info["redis_version"]).split(".")[:3])
            self._redis_version = (major, minor, patch)
        return self._redis_version
