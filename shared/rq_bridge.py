"""Every use of RQ's (and redis-py's) private or version-specific internals, in one file.

mlxq keeps RQ's bookkeeping so that RQ's tools see ordinary jobs, but runs many jobs at once
in one process, enqueues from an event loop and recovers jobs of dead workers itself; RQ has
no public API for any of that. This module is the only one that touches RQ privates
(``_stop_requested``, ``_ordered_queues``, ``job._result`` / ``job._status``, the steps of
``prepare_execution``) or a redis-py pipeline's ``command_stack``. ``rq`` is pinned exactly
in pyproject.toml for this file: an RQ upgrade is this file's work.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any, cast

import redis
from rq import worker_registration
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.suspension import is_suspended
from rq.utils import utcformat
from rq.worker import SimpleWorker, WorkerStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

RecordedCommand = tuple[tuple[Any, ...], dict[str, Any]]


# -- the API: enqueueing without blocking the event loop ----------------------------------


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


# -- the worker: RQ's bookkeeping for several jobs at once --------------------------------


class ConcurrentWorkerBase(SimpleWorker):
    """RQ's ``SimpleWorker`` (never forks) with public names for the internals a worker that
    runs several jobs at once needs. ``worker/rq_worker.py`` builds its loop on these."""

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def stop_after_running_jobs(self) -> None:
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        self._install_signal_handlers()

    def _shutdown(self) -> None:
        # RQ raises StopRequested from the signal handler when idle, which can land between
        # taking a job and handing it over; a flag checked each second never loses one.
        self.stop_after_running_jobs()
        self.set_shutdown_requested_date()
        self.on_stop_signal()

    def on_stop_signal(self) -> None:
        """Called in the signal handler after a stop was requested (SIGINT, SIGTERM)."""

    def serve_first(self, queue: Queue) -> None:
        """Take jobs from ``queue`` ahead of the others (a worker's own queue)."""
        self.queues.insert(0, queue)
        self._ordered_queues = self.queues[:]

    def rejoin(self) -> None:
        """Register again after the reaper forgot this worker (it was silent, then woke):
        RQ's ``register_birth`` without its check, since heartbeats already wrote the key."""
        self.executions.clear()  # the jobs they tracked were given to other workers
        with self.connection.pipeline() as pipeline:
            pipeline.delete(self.key, self.executions_key)
            self.birth_date = self.last_heartbeat = datetime.now(UTC)
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def is_suspended(self) -> bool:
        """``rq suspend`` is in force: take no new job."""
        return bool(is_suspended(self.connection, self))

    def serving_queues(self) -> list[Queue]:
        """The queues this worker takes jobs from, in the order it serves them."""
        return list(self._ordered_queues)

    def dequeue(self, timeout_s: int, queues: list[Queue]) -> tuple[Job, Queue] | None:
        """The next job from ``queues`` (the first that has one), through RQ's intermediate
        queue."""
        try:
            return self.queue_class.dequeue_any(
                queues,
                timeout_s,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
            )
        except DequeueTimeout:
            return None

    def give_back(self, job: Job, queue: Queue) -> None:
        """A job taken but not started goes back to the front of its queue."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            pipeline.lpush(queue.key, job.id)
            pipeline.execute()

    def add_start(self, pipeline: Any, job: Job, queue: Queue) -> Execution:
        """RQ's ``prepare_execution`` and ``prepare_job_execution`` for one job, queued on the
        caller's pipeline so that its own writes go in the same round trip."""
        ttl = self.get_heartbeat_ttl(job)
        execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
        self.executions[execution.id] = execution
        self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
        self.heartbeat(ttl, pipeline=pipeline)
        job.heartbeat(datetime.now(UTC), ttl, pipeline=pipeline)
        job.prepare_for_execution(self.name, pipeline=pipeline)
        pipeline.persist(job.key)
        pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
        return execution

    def end_finished(
        self, job: Job, queue: Queue, execution: Execution, result: dict[str, Any]
    ) -> None:
        """End a job that answered: RQ's result, registries and worker statistics."""
        job.ended_at = datetime.now(UTC)
        job._result = result
        job._status = JobStatus.FINISHED
        self.handle_job_success(job, queue, queue.started_job_registry, execution)

    def end_failed(
        self, job: Job, queue: Queue, execution: Execution, why: str, keep_s: int | None = None
    ) -> None:
        """End a job that failed; its record keeps no prompt, and only ``keep_s`` seconds
        when given (a refused request needs no day of diagnosis)."""
        job.ended_at = datetime.now(UTC)
        job._status = JobStatus.FAILED
        if keep_s is not None:
            job.failure_ttl = keep_s
        self.handle_job_failure(job, queue, exc_string=why, execution=execution)
        with self.connection.pipeline() as pipeline:
            add_strip_payload(pipeline, job)
            pipeline.execute()

    def end_cancelled(self, job: Job, queue: Queue, execution: Execution, keep_s: int) -> None:
        """A job whose client went away is RQ's "canceled", not "failed": it did not break."""
        job.ended_at = datetime.now(UTC)
        job.failure_ttl = keep_s
        with self.connection.pipeline() as pipeline:
            add_strip_payload(pipeline, job)
            job.set_status(JobStatus.CANCELED, pipeline=pipeline)
            pipeline.hset(job.key, "ended_at", utcformat(job.ended_at))
            queue.canceled_job_registry.add(job, ttl=job.failure_ttl or 0, pipeline=pipeline)
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            if job.failure_ttl:
                pipeline.expire(job.key, job.failure_ttl)
            pipeline.execute()

    def fail_foreign(self, job: Job, queue: Queue, why: str, keep_s: int) -> None:
        """Fail a job that is not mlxq's own without RQ's failure handling, which would run
        the callbacks, webhooks, retries and repeats the job names: only its status, the
        failed registry (for ``keep_s`` seconds) and a record without its payload."""
        with self.connection.pipeline() as pipeline:
            pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            queue.failed_job_registry.add(job, ttl=keep_s, exc_string=why, pipeline=pipeline)
            Result.create_failure(
                job, keep_s, exc_string=why, worker_name=self.name, pipeline=pipeline
            )
            add_strip_payload(pipeline, job)
            pipeline.expire(job.key, keep_s)
            pipeline.execute()

    def show_state(self, *, suspended: bool, running: int) -> None:
        """RQ's worker state, as ``rq info`` and dashboards show it."""
        if suspended:
            self.set_state(WorkerStatus.SUSPENDED)
        else:
            self.set_state(WorkerStatus.BUSY if running else WorkerStatus.IDLE)


# -- the reaper: recovering the jobs of a dead worker -------------------------------------


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except Exception:  # gone (expired, deleted) or unreadable: nothing to recover
        return None


def job_queue(connection: redis.Redis, job: Job) -> Queue:
    return Queue(job.origin, connection=connection, serializer=JSONSerializer)


def is_started(job: Job) -> bool:
    return job.get_status() == JobStatus.STARTED


def add_requeue_at_front(pipeline: Any, job: Job, queue: Queue) -> None:
    """Put a started job back at the front of its queue (it has waited already)."""
    _add_remove_from_started(pipeline, queue, job.id)
    job.set_status(JobStatus.QUEUED, pipeline=pipeline)
    pipeline.lpush(queue.key, job.id)


def add_failure(pipeline: Any, job: Job, queue: Queue, why: str) -> None:
    """Fail a started job whose worker is gone, the way RQ fails abandoned jobs."""
    _add_remove_from_started(pipeline, queue, job.id)
    record_job_failure(job, why, pipeline)
    add_strip_payload(pipeline, job)


def add_strip_payload(pipeline: Any, job: Job) -> None:
    """Keep no prompt in an ended job's record: only what diagnosis needs (the request's
    id and model). A stream of large refused prompts must not grow Redis. A payload that
    does not even deserialize (a planted pickle) is replaced whole."""
    try:
        func_name, kwargs = job.func_name, job.kwargs
    except Exception:
        func_name, kwargs = "<unreadable>", {}
    request = kwargs.get("request") if isinstance(kwargs, dict) else None
    if not isinstance(request, dict):
        request = {}
    kept = {k: request[k] for k in ("request_id", "model") if k in request}
    data = JSONSerializer.dumps((func_name, None, [], {"request": {**kept, "redacted": True}}))
    pipeline.hset(job.key, "data", zlib.compress(data))  # as RQ's Job.save stores it


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


# -- the fleet view -----------------------------------------------------------------------


def queue_names(connection: redis.Redis) -> list[str]:
    prefix = Queue.redis_queue_namespace_prefix
    keys: Any = connection.smembers(Queue.redis_queues_keys)
    return sorted(q.decode().removeprefix(prefix) for q in keys)


def queue_depths(connection: redis.Redis) -> list[tuple[str, int, int]]:
    """(queue name, jobs waiting, failed jobs kept) for every RQ queue."""
    names = queue_names(connection)
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.llen(Queue.redis_queue_namespace_prefix + name)
            pipeline.zcard(FailedJobRegistry(name, connection=connection).key)
        counts = pipeline.execute()
    return list(zip(names, counts[::2], counts[1::2], strict=True))


def queue_key(name: str) -> str:
    """The Redis list of an RQ queue."""
    return Queue.redis_queue_namespace_prefix + name


# -- moving a queued job between queues (cache-aware routing) -----------------------------

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


def forget_queue(connection: redis.Redis, queue_name: str) -> None:
    """Drop an empty queue from RQ's set of queues (a dead worker's own queue)."""
    connection.srem(Queue.redis_queues_keys, queue_key(queue_name))


def release_queue(connection: redis.Redis, queue_name: str) -> int:
    """Move every job waiting in a worker's own queue to the front of the shared queue
    (the worker stops or died), then forget the own queue; returns how many moved."""
    from shared.keys import shared_queue_of

    shared = shared_queue_of(queue_name)
    moved = 0
    for job_id in reversed(queued_job_ids(connection, queue_name)):  # keep their order
        moved += int(cast(int, connection.eval(*move_queued_job(job_id, queue_name, shared))))
    forget_queue(connection, queue_name)
    return moved


# -- a job taken from its queue that nobody started ---------------------------------------

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
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[4], 1, 'EX', ARGV[2])
  return 0
end
redis.call('DEL', KEYS[4])
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""
"""A job out of its queue that no worker has started (no owner) on two checks in a row was
taken by a worker that then stalled (a paused Mac holds what its blocking dequeue got): put it
back at the front, and whichever worker starts it first runs it (the owner key decides).
Returns 1 when put back, -1 when the job itself is gone (Redis lost it), else 0."""


def recover_taken_job(
    job_id: str, queue_name: str, owner_key: str, suspect_key: str, suspect_ttl_s: int
) -> tuple[Any, ...]:
    """Arguments for ``connection.eval(*...)``."""
    keys = (owner_key, queue_key(queue_name), Job.key_for(job_id), suspect_key)
    return (_RECOVER_TAKEN_JOB, 4, *keys, job_id, suspect_ttl_s)
