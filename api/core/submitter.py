"""Enqueueing RQ jobs from the event loop without blocking it.

RQ's enqueue is synchronous. Rather than call it in a thread, ``JobSubmitter`` has RQ's own
``Queue.enqueue_job`` recorded (shared/rq_bridge/enqueue.py) and replays the commands on
redis.asyncio in one MULTI/EXEC round trip. The job hash, queue list and registries come out
exactly as RQ writes them.
"""

import asyncio
from typing import Any

import redis.asyncio as aioredis
from rq.queue import Queue

from shared import protocol
from shared.api_keys import has_own_queue
from shared.errors import QueueFull
from shared.job_functions import function_for
from shared.keys import (
    batch_lane_name,
    key_queue_name,
    queue_name_for_model,
    shared_queue_of,
    worker_queue_name,
)
from shared.routing import prefix_hashes
from shared.rq_bridge import (
    EnqueueRecorder,
    RecordedCommand,
    home_command,
    move_queued_job_home,
    pushed_queue_length,
    queue_key,
    withdraw_queued_job,
)
from shared.schemas import EmbeddingRequest, GenerationRequest, JobRequest, TokenizeRequest
from shared.settings import Settings

OFF_LOOP_BYTES = 64 * 1024
"""A request whose text is larger than this is hashed and serialized in a thread: a 1 MB
prompt costs the event loop tens of milliseconds that every other request would wait."""
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

    def home_queue(self, request: JobRequest) -> str:
        """Where a live request waits unless it is routed: its made key's queue (workers serve
        the keys' queues in turn), else the model's shared queue."""
        queue = self.queue_name(request.model)
        if request.owner is not None and has_own_queue(request.owner):
            return key_queue_name(queue, request.owner)
        return queue

    async def enqueue(self, request: JobRequest, job_id: str, batch_id: str | None = None) -> str:
        """Enqueue the job; returns the queue it waits in: its home queue (``home_queue``),
        or the own queue of the worker that holds the longest prefix of its conversation. An
        embedding job has no conversation to route by: it goes home. A line of a batch
        (``batch_id``) goes to that batch's lane, which workers serve last."""
        large = _text_bytes(request) > OFF_LOOP_BYTES
        home = self.home_queue(request)
        holder = None
        if batch_id is not None:
            placement = batch_lane_name(self.queue_name(request.model), batch_id, request.owner)
        elif not isinstance(request, GenerationRequest):  # embeddings, tokenizing: no chat
            placement = home
        else:
            placement, holder = await self._placement(request, large, home)
        queue = await self._queue(placement)
        if large:  # hashing, JSON and compression of a large prompt: not on the event loop
            commands = await asyncio.to_thread(self._commands, queue, request, job_id)
        else:
            commands = self._commands(queue, request, job_id)
        if holder is not None:  # routed: where it goes if it must leave
            commands.append(home_command(job_id, home))
        async with self._connection.pipeline(transaction=True) as pipeline:
            for args, options in commands:
                pipeline.execute_command(*args, **options)
            if holder is not None:  # read in the same transaction, after the push
                pipeline.zscore(protocol.LIVE_WORKERS, holder)
            results = await pipeline.execute()
        if holder is not None and results[-1] is None:
            # The holder left the live set (it died, or stopped) between the placement and
            # the push: whoever took it off may have released its own queues already, and
            # nobody would take this job from there before MLXQ_ROUTE_WAIT.
            return await self.to_home_queue(queue.name, job_id) or home
        queued = pushed_queue_length(commands, results[: len(commands)])
        await self._admit(queue.name, job_id, queued)
        return queue.name

    def _commands(self, queue: Queue, request: JobRequest, job_id: str) -> list[RecordedCommand]:
        """RQ's own enqueue of the job, recorded (see shared/rq_bridge/enqueue.py)."""
        function = function_for(request)
        job = queue.create_job(
            function,
            kwargs={"request": request.model_dump(mode="json")},
            job_id=job_id,
            timeout=self._settings.job_timeout,
            result_ttl=self._settings.result_ttl,
            failure_ttl=self._settings.failure_ttl,
            description=f"{function.rsplit('.', 1)[-1]} {request.request_id}",
        )
        return self._recorder.enqueue_commands(queue, job)

    async def _placement(
        self, request: GenerationRequest, large: bool, home: str
    ) -> tuple[str, str | None]:
        """Cache-aware routing: the prefix owner's own queue when it is live with a free slot
        (it serves that queue first), else the request's home queue; and the owner routed to,
        if any. A made key's request is not routed while the key has requests waiting: a
        worker's own queue is served ahead of every key's, so a flood that shares a prefix
        would pass the other keys (and the key's own earlier requests)."""
        shared = self.queue_name(request.model)
        if home != shared and await self._connection.llen(queue_key(home)):
            return home, None
        hashes = (
            await asyncio.to_thread(prefix_hashes, request) if large else prefix_hashes(request)
        )
        holder = await protocol.longest_prefix_owner(self._connection, hashes)
        if holder is not None and await protocol.worker_has_room(self._connection, holder):
            return worker_queue_name(shared, holder), holder
        return home, None

    async def _admit(self, queue_name: str, job_id: str, queued: int) -> None:
        """Bound the queue fleet-wide: a job pushed past MLXQ_MAX_QUEUED is taken back out
        (unless a worker already took it) and refused, so memory stays bounded."""
        if queued <= self._settings.max_queued:
            return
        if await self.withdraw(queue_name, job_id):
            raise QueueFull(
                f"The queue {queue_name!r} is full ({self._settings.max_queued} requests "
                "waiting, MLXQ_MAX_QUEUED); try again shortly.",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            )

    async def cancel(self, queue_name: str, job_id: str) -> None:
        """The client went away: drop the job if still queued, else stop its generation."""
        if await self.withdraw(queue_name, job_id):
            return
        async with self._connection.pipeline(transaction=False) as pipeline:
            protocol.add_cancel_request(pipeline, job_id, self._settings.event_ttl)
            await pipeline.execute()

    async def withdraw(self, queue_name: str, job_id: str) -> bool:
        """Take a job back out of its queue; False when a worker has already taken it."""
        return bool(await self._connection.eval(*withdraw_queued_job(job_id, queue_name)))

    async def to_home_queue(self, queue_name: str, job_id: str) -> str | None:
        """A job that waited too long in a worker's own queue goes to the front of its home
        queue; returns that queue, or None when it was taken meanwhile (or was not in a
        worker's own queue)."""
        if shared_queue_of(queue_name) == queue_name:
            return None
        moved = await self._connection.eval(*move_queued_job_home(job_id, queue_name))
        return moved.decode() if isinstance(moved, bytes) else moved

    async def _queue(self, name: str) -> Queue:
        return self._recorder.queue(name, await self._server_version())

    async def _server_version(self) -> tuple[int, int, int]:
        if self._redis_version is None:
            info = await self._connection.info("server")
            major, minor, patch = (int(p) for p in str(info["redis_version"]).split(".")[:3])
            self._redis_version = (major, minor, patch)
        return self._redis_version


def _text_bytes(request: JobRequest) -> int:
    """About how large the request's text is (its messages, prompts or inputs)."""
    if isinstance(request, EmbeddingRequest):
        parts: list[Any] = list(request.inputs)
    elif isinstance(request, TokenizeRequest):
        parts = [request.prompt or ""] + [m.content for m in request.messages or []]
    else:
        parts = [m.content for m in request.messages or []] + list(request.prompts or [])
    return sum(len(part) for part in parts)
