"""RQ's queues: their names and depths, and moving a waiting job between them (cache-aware
routing sends a request to one worker's own queue; it may have to move to the shared one)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple, cast

import redis
import redis.asyncio as aioredis
from rq.job import Job
from rq.queue import Queue
from rq.registry import FailedJobRegistry

from shared.keys import shared_queue_of


def queue_names(connection: redis.Redis) -> list[str]:
    prefix = Queue.redis_queue_namespace_prefix
    keys: Any = connection.smembers(Queue.redis_queues_keys)
    return sorted(q.decode().removeprefix(prefix) for q in keys)


REFUSED_PREFIX = "mlxq:refused:"
"""mlxq's companion to a queue's failed registry: the jobs in it that were refused (a bad
request, one too long for the context, one past its deadline), not failed. RQ keeps both
kinds in its failed registry; the fleet's figures count them apart."""


def refused_key(queue: str) -> str:
    return REFUSED_PREFIX + queue


def add_refused(pipeline: Any, queue: str, job_id: str, keep_s: int) -> None:
    """Mark a job that the failed registry keeps for ``keep_s`` seconds as a refusal (the
    same expiry, as the registry's score; expired marks are dropped as new ones come)."""
    now = time.time()
    key = refused_key(queue)
    pipeline.zadd(key, {job_id: now + keep_s})
    pipeline.zremrangebyscore(key, "-inf", now)
    pipeline.expire(key, keep_s)


class QueueDepth(NamedTuple):
    queue: str
    queued: int
    """Jobs waiting."""
    failed: int
    """Jobs that failed (mlxq's fault, or a worker's), kept by RQ's failed registry."""
    refused: int
    """Requests refused by a worker (the client's to fix), kept there too."""


def queue_depths(connection: redis.Redis) -> list[QueueDepth]:
    """Every RQ queue's depth and the jobs its failed registry keeps, refusals apart."""
    names = queue_names(connection)
    now = time.time()
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.llen(Queue.redis_queue_namespace_prefix + name)
            pipeline.zcount(FailedJobRegistry(name, connection=connection).key, now, "+inf")
            pipeline.zcount(refused_key(name), now, "+inf")
        counts = pipeline.execute()
    return [
        QueueDepth(name, queued, max(0, kept - refused), refused)
        for name, queued, kept, refused in zip(
            names, counts[::3], counts[1::3], counts[2::3], strict=True
        )
    ]


def queue_key(name: str) -> str:
    """The Redis list of an RQ queue."""
    return Queue.redis_queue_namespace_prefix + name


_MOVE_QUEUED_JOB = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'origin', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""
"""Atomically: if the job still waits in one queue, put it at the front of another and make
that its origin (RQ's registries follow ``origin``); else (a worker took it) do nothing."""


def move_queued_job(job_id: str, from_queue: str, to_queue: str) -> tuple[Any, ...]:
    """Arguments for ``connection.eval(*...)``, sync or async: returns 1 when moved."""
    keys = (queue_key(from_queue), queue_key(to_queue), Job.key_for(job_id))
    return (_MOVE_QUEUED_JOB, 3, *keys, job_id, to_queue)


def queued_job_ids(connection: redis.Redis, queue_name: str) -> list[str]:
    ids: Any = connection.lrange(queue_key(queue_name), 0, -1)
    return [i.decode() for i in ids]


async def forget_queue_async(connection: aioredis.Redis, queue_name: str) -> None:
    """Drop a queue from RQ's set of queues (a batch's lane, once the batch has ended)."""
    await connection.srem(Queue.redis_queues_keys, queue_key(queue_name))


def forget_queue(connection: redis.Redis, queue_name: str) -> None:
    """Drop an empty queue from RQ's set of queues (a dead worker's own queue)."""
    connection.srem(Queue.redis_queues_keys, queue_key(queue_name))


def release_queue(connection: redis.Redis, queue_name: str) -> int:
    """Move every job waiting in a worker's own queue to the front of the shared queue
    (the worker stops or died), then forget the own queue; returns how many moved."""
    shared = shared_queue_of(queue_name)
    moved = 0
    for job_id in reversed(queued_job_ids(connection, queue_name)):  # keep their order
        moved += int(cast(int, connection.eval(*move_queued_job(job_id, queue_name, shared))))
    forget_queue(connection, queue_name)
    return moved
