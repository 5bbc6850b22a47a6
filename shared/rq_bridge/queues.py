"""RQ's queues: their names and depths, and moving a waiting job between them (cache-aware
routing sends a request to one worker's own queue; it may have to move to its home queue)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

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


HOME_FIELD = "mlxq_home"
"""Field in RQ's job hash naming the queue a routed job goes back to when it leaves a
worker's own queue: its key's queue (RQ's own fields are untouched)."""

_MOVE_QUEUED_JOB = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return false end
local to = redis.call('HGET', KEYS[2], ARGV[4]) or ARGV[2]
redis.call('HSET', KEYS[2], 'origin', to)
redis.call('LPUSH', ARGV[3] .. to, ARGV[1])
return to
"""
"""Atomically: if the job still waits in a worker's own queue, put it at the front of its
home (its key's queue, else the shared one) and make that its origin (RQ's registries follow
``origin``); returns the home, or nothing when a worker took the job meanwhile."""


def move_queued_job_home(job_id: str, from_queue: str) -> tuple[Any, ...]:
    """Arguments for ``connection.eval(*...)``, sync or async: the queue the job moved to
    (bytes), or None when it no longer waited in ``from_queue``."""
    keys = (queue_key(from_queue), Job.key_for(job_id))
    prefix = Queue.redis_queue_namespace_prefix
    return (_MOVE_QUEUED_JOB, 2, *keys, job_id, shared_queue_of(from_queue), prefix, HOME_FIELD)


def home_command(job_id: str, home: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A command to replay with a routed job's enqueue: the queue it goes back to."""
    return (("HSET", Job.key_for(job_id), HOME_FIELD, home), {})


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
    """Move every job waiting in a worker's own queue to the front of its home queue (its
    key's, else the shared one: the worker stops or died), then forget the own queue;
    returns how many moved."""
    moved = 0
    for job_id in reversed(queued_job_ids(connection, queue_name)):  # keep their order
        moved += connection.eval(*move_queued_job_home(job_id, queue_name)) is not None
    forget_queue(connection, queue_name)
    return moved
