"""The reaper's side: the jobs of a dead worker, and a job taken from its queue that nobody
started. mlxq recovers them itself, in seconds; RQ alone would after job_timeout + 60 s."""

from __future__ import annotations

from typing import Any, cast

import redis
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.worker import SimpleWorker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from shared.rq_bridge.job_records import add_strip_payload
from shared.rq_bridge.queues import queue_key, queue_names

ATTEMPTS_FIELD = "mlxq_attempts"
"""Field in RQ's job hash counting the runs mlxq started (RQ's own fields are untouched)."""


def runs_so_far(connection: redis.Redis, job: Job) -> int:
    """How many times the job has been started: once, plus the retries mlxq made."""
    return int(cast(Any, connection.hget(job.key, ATTEMPTS_FIELD)) or 1)


def add_requeue_at_front(pipeline: Any, job: Job, queue: Queue, runs: int) -> None:
    """Put a started job back at the front of its queue (it has waited already), counting
    ``runs`` (its next run included)."""
    pipeline.hset(job.key, ATTEMPTS_FIELD, runs)
    _add_remove_from_started(pipeline, queue, job.id)
    job.set_status(JobStatus.QUEUED, pipeline=pipeline)
    pipeline.lpush(queue.key, job.id)


def add_failure(pipeline: Any, job: Job, queue: Queue, why: str) -> None:
    """Fail a started job whose worker is gone, the way RQ fails abandoned jobs."""
    _add_remove_from_started(pipeline, queue, job.id)
    record_job_failure(job, why, pipeline)
    add_strip_payload(pipeline, job)


def _add_remove_from_started(pipeline: Any, queue: Queue, job_id: str) -> None:
    # RQ 3 keys the started registry by "<job id>:<execution id>".
    registry = queue.started_job_registry
    entries: Any = queue.connection.zrange(registry.key, 0, -1)
    for entry in entries:
        if entry.decode().split(":", 1)[0] == job_id:
            pipeline.zrem(registry.key, entry)


def forget_worker(connection: redis.Redis, name: str) -> None:
    """Remove a dead worker from RQ's worker sets, so ``rq info`` stops listing it."""
    worker_key = SimpleWorker.redis_worker_namespace_prefix + name
    with connection.pipeline() as pipeline:
        pipeline.srem(SimpleWorker.redis_workers_keys, worker_key)
        for queue_name in queue_names(connection):
            pipeline.srem(WORKERS_BY_QUEUE_KEY % queue_name, worker_key)
        pipeline.delete(worker_key)
        pipeline.execute()


_RECOVER_TAKEN_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[4])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('DEL', KEYS[4])
  return 0
end
if KEYS[5] ~= KEYS[2] and redis.call('LPOS', KEYS[5], ARGV[1]) then
  redis.call('DEL', KEYS[4])
  return 2
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[4], 1, 'EX', ARGV[2])
  return 0
end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[3], 'origin', ARGV[3])
redis.call('LPUSH', KEYS[5], ARGV[1])
return 1
"""
"""A job out of its queue that no worker has started (no owner) on two checks in a row was
taken by a worker that then stalled or died (a paused Mac holds what its blocking dequeue got;
a worker killed as it dequeued never starts it): put it back at the front of its home queue,
never a worker's own (that worker is the one that stalled), and whichever worker starts it
first runs it (the owner key decides). A routed job that its worker's leaving moved home is
found there. Returns 1 when put back, 2 when found in its home queue, -1 when the job itself
is gone (Redis lost it), else 0."""


def recover_taken_job(
    job_id: str,
    queue_name: str,
    home_queue: str,
    owner_key: str,
    suspect_key: str,
    suspect_ttl_s: int,
) -> tuple[Any, ...]:
    """Arguments for ``connection.eval(*...)``: ``queue_name`` is where the job was placed,
    ``home_queue`` where it goes back to."""
    keys = (owner_key, queue_key(queue_name), Job.key_for(job_id), suspect_key)
    return (_RECOVER_TAKEN_JOB, 5, *keys, queue_key(home_queue), job_id, suspect_ttl_s, home_queue)
