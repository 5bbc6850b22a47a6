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

from shared import keys
from shared.errors import QueueFull
from shared.jobs import GENERATE_FUNCTION
from shared.keys import queue_name_for_model
from shared.schemas import GenerationRequest
from shared.settings import Settings

QUEUE_FULL_RETRY_AFTER_S = 2
"""Retry-After for a 429: a full queue drains in seconds on a busy fleet."""


def _queue_length(commands: list, results: list) -> int:
    """The queue's length after our push: RPUSH's reply within the replayed transaction."""
    for (args, _), result in zip(commands, results, strict=True):
        if args[0] in ("RPUSH", "LPUSH"):
            return int(result)
    raise AssertionError("RQ's enqueue pushed no job id")


class JobSubmitter:
    def __init__(self, connection: aioredis.Redis, settings: Settings) -> None:
        self._connection = connection
        self._settings = settings
        # Never connects: it only gives RQ something to build pipelines on.
        self._recorder = redis.Redis()
        self._queues: dict[str, Queue] = {}
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
        recorded = self._recorder.pipeline(transaction=True)
        queue.enqueue_job(job, pipeline=recorded)
        async with self._connection.pipeline(transaction=True) as pipeline:
            for args, options in recorded.command_stack:
                pipeline.execute_command(*args, **options)
            results = await pipeline.execute()
        await self._admit(request.model, job_id, _queue_length(recorded.command_stack, results))

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
            pipeline.set(keys.job_cancel_key(job_id), 1, ex=self._settings.event_ttl)
            pipeline.publish(keys.CANCEL_CHANNEL, job_id)
            await pipeline.execute()

    async def withdraw(self, model: str, job_id: str) -> bool:
        """Take a job back out of the queue; False when a worker has already taken it."""
        queue = await self._queue(model)
        removed = await self._connection.lrem(queue.key, 1, job_id)
        if removed:
            await self._connection.delete(Job.key_for(job_id))
        return bool(removed)

    async def _queue(self, model: str) -> Queue:
        name = self.queue_name(model)
        if name not in self._queues:
            queue = Queue(name, connection=self._recorder, serializer=JSONSerializer)
            queue.redis_server_version = await self._server_version()
            self._queues[name] = queue
        return self._queues[name]

    async def _server_version(self) -> tuple[int, int, int]:
        if self._redis_version is None:
            info = await self._connection.info("server")
            major, minor, patch = (int(p) for p in str(info["redis_version"]).split(".")[:3])
            self._redis_version = (major, minor, patch)
        return self._redis_version
