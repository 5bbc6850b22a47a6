"""Enqueueing RQ jobs from the event loop without blocking it.

RQ's enqueue is synchronous. Rather than call it in a thread, ``JobSubmitter`` lets RQ's own
``Queue.enqueue_job`` write into a pipeline that is never executed, and replays the recorded
commands on redis.asyncio in one round trip. The job hash, queue list and registries come out
exactly as RQ writes them (rq is pinned exactly, since the commands are RQ's).
"""

import redis
import redis.asyncio as aioredis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.jobs import GENERATE_FUNCTION
from shared.schemas import GenerationRequest
from shared.settings import Settings


class JobSubmitter:
    def __init__(self, connection: aioredis.Redis, settings: Settings) -> None:
        self._connection = connection
        self._settings = settings
        # Never connects: it only gives RQ something to build pipelines on.
        self._recorder = redis.Redis()
        self._queue = Queue(
            settings.queue_name, connection=self._recorder, serializer=JSONSerializer
        )

    @property
    def queue_name(self) -> str:
        return self._queue.name

    async def enqueue(self, request: GenerationRequest, job_id: str) -> None:
        if self._queue.redis_server_version is None:
            info = await self._connection.info("server")
            major, minor, patch = (int(p) for p in str(info["redis_version"]).split(".")[:3])
            self._queue.redis_server_version = (major, minor, patch)
        job = self._queue.create_job(
            GENERATE_FUNCTION,
            kwargs={"request": request.model_dump(mode="json")},
            job_id=job_id,
            timeout=self._settings.job_timeout,
            result_ttl=self._settings.result_ttl,
            failure_ttl=self._settings.failure_ttl,
            description=f"generate {request.request_id}",
        )
        recorded = self._recorder.pipeline(transaction=True)
        self._queue.enqueue_job(job, pipeline=recorded)
        async with self._connection.pipeline(transaction=True) as pipeline:
            for args, options in recorded.command_stack:
                pipeline.execute_command(*args, **options)
            await pipeline.execute()

    async def withdraw(self, job_id: str) -> bool:
        """Take a job back out of the queue; False when a worker has already taken it."""
        removed = await self._connection.lrem(self._queue.key, 1, job_id)
        if removed:
            await self._connection.delete(Job.key_for(job_id))
        return bool(removed)
