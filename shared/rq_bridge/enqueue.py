"""The API's side: enqueueing RQ jobs from an event loop, and taking a queued job back.

RQ's ``Queue.enqueue_job`` is synchronous; ``EnqueueRecorder`` has it write into a pipeline
that is never executed, and hands the recorded commands to the caller to replay on
redis.asyncio in one MULTI/EXEC round trip.
"""

from __future__ import annotations

from typing import Any

import redis
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.rq_bridge.queues import queue_key

RecordedCommand = tuple[tuple[Any, ...], dict[str, Any]]


class EnqueueRecorder:
    """Lets RQ's own ``Queue.enqueue_job`` write into a pipeline that is never executed, and
    hands back the recorded commands, for the caller to replay on redis.asyncio."""

    def __init__(self) -> None:
        self._recorder = redis.Redis()  # never connects: RQ only builds pipelines on it
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str, server_version: tuple[int, int, int]) -> Queue:
        if name not in self._queues:
            queue = Queue(name, connection=self._recorder, serializer=JSONSerializer)
            queue.redis_server_version = server_version  # RQ would ask the server
            self._queues[name] = queue
        return self._queues[name]

    def enqueue_commands(self, queue: Queue, job: Job) -> list[RecordedCommand]:
        recorded = self._recorder.pipeline(transaction=True)
        queue.enqueue_job(job, pipeline=recorded)
        return [(tuple(args), dict(options)) for args, options in recorded.command_stack]


def pushed_queue_length(commands: list[RecordedCommand], results: list[Any]) -> int:
    """The queue's length after the push: the RPUSH's reply within a replayed enqueue."""
    for (args, _), result in zip(commands, results, strict=True):
        if args[0] in ("RPUSH", "LPUSH"):
            return int(result)
    raise AssertionError("RQ's enqueue pushed no job id")


_WITHDRAW_QUEUED_JOB = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""
"""Atomically: if the job still waits in its queue, take it out and delete its record (it
never ran: nothing of it is worth keeping); else (a worker took it) do nothing."""


def withdraw_queued_job(job_id: str, queue_name: str) -> tuple[Any, ...]:
    """Arguments for ``connection.eval(*...)``, sync or async: returns 1 when withdrawn, 0
    when a worker has already taken the job."""
    return (_WITHDRAW_QUEUED_JOB, 2, queue_key(queue_name), Job.key_for(job_id), job_id)
