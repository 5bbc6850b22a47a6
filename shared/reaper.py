"""Recovering the jobs of a worker that died (SIGKILL, crash, a laptop lid closed).

RQ alone notices a dead in-process worker only after job_timeout + 60 s. mlxq workers
heartbeat once a second; the API runs ``reap`` every second, and a worker silent for
WORKER_LIVENESS_S is declared dead. Each of its jobs is then retried once on another live
worker, or failed with a clear error, and its client told. A stream that already sent text is
not retried (the client would see it twice): it ends with an error event.
"""

import json
import logging

import redis
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared import keys
from shared.errors import ErrorCode
from shared.fleet import live_models, silent_workers
from shared.schemas import ErrorEvent, GenerationRequest

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""A job runs at most twice: once, and once more after its worker died."""
ATTEMPTS_FIELD = "mlxq_attempts"
"""Field in RQ's job hash counting the retries mlxq made (RQ's own fields are untouched)."""


def reap(connection: redis.Redis, event_ttl_s: int) -> list[str]:
    """Recover the jobs of every dead worker; returns the names of the workers reaped."""
    reaped = []
    for name in silent_workers(connection):
        if connection.zrem(keys.LIVE_WORKERS, name) == 0:
            continue  # another API process is reaping it
        log.warning("worker %s stopped heartbeating; recovering its jobs", name)
        for job_id in connection.smembers(keys.worker_jobs_key(name)):
            _recover(connection, job_id.decode(), name, event_ttl_s)
        connection.delete(keys.worker_jobs_key(name))
        _forget_rq_worker(connection, name)
        reaped.append(name)
    return reaped


def _recover(connection: redis.Redis, job_id: str, worker: str, event_ttl_s: int) -> None:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except Exception:  # gone (expired, deleted): nothing to recover
        return
    if job.get_status() != JobStatus.STARTED:
        return
    request = GenerationRequest.model_validate(job.kwargs["request"])
    queue = Queue(job.origin, connection=connection, serializer=JSONSerializer)
    attempts = int(connection.hget(job.key, ATTEMPTS_FIELD) or 1)
    events = _events(connection, job_id)
    sent_text = any(e.get("type") == "token" for e in events)
    if attempts >= MAX_ATTEMPTS or sent_text or request.model not in live_models(connection):
        reason = (
            "it had already streamed part of its answer"
            if sent_text
            else "it was already retried once"
            if attempts >= MAX_ATTEMPTS
            else f"no other live worker serves {request.model!r}"
        )
        message = f"The worker generating this request stopped responding ({worker}); {reason}."
        next_seq = max((e.get("seq", -1) for e in events), default=-1) + 1
        _fail(connection, job, queue, message, next_seq, event_ttl_s)
    else:
        _retry(connection, job, queue, attempts + 1)


def _events(connection: redis.Redis, job_id: str) -> list[dict]:
    entries = connection.xrange(keys.job_events_stream(job_id))
    return [json.loads(fields[b"event"]) for _, fields in entries]


def _remove_from_started(pipeline, queue: Queue, job_id: str) -> None:
    registry = queue.started_job_registry
    for entry in queue.connection.zrange(registry.key, 0, -1):
        if entry.decode().split(":", 1)[0] == job_id:
            pipeline.zrem(registry.key, entry)


def _retry(connection: redis.Redis, job: Job, queue: Queue, attempt: int) -> None:
    log.warning("job %s: retrying on another worker", job.id)
    with connection.pipeline() as pipeline:
        _remove_from_started(pipeline, queue, job.id)
        pipeline.hset(job.key, ATTEMPTS_FIELD, attempt)
        job.set_status(JobStatus.QUEUED, pipeline=pipeline)
        pipeline.lpush(queue.key, job.id)  # at the front: it has waited already
        pipeline.execute()


def _fail(
    connection: redis.Redis, job: Job, queue: Queue, message: str, seq: int, event_ttl_s: int
) -> None:
    log.warning("job %s: failed: %s", job.id, message)
    event = ErrorEvent(seq=seq, code=ErrorCode.WORKER_LOST, message=message).model_dump_json()
    stream = keys.job_events_stream(job.id)
    with connection.pipeline() as pipeline:
        _remove_from_started(pipeline, queue, job.id)
        record_job_failure(job, f"{ErrorCode.WORKER_LOST}: {message}", pipeline)
        pipeline.xadd(stream, {"event": event})
        pipeline.expire(stream, event_ttl_s)
        pipeline.publish(keys.job_events_channel(job.id), event)
        pipeline.execute()


def _forget_rq_worker(connection: redis.Redis, name: str) -> None:
    """Remove the dead worker from RQ's worker sets, so `rq info` stops listing it."""
    worker_key = f"rq:worker:{name}"
    with connection.pipeline() as pipeline:
        pipeline.srem("rq:workers", worker_key)
        for queue_key in connection.smembers("rq:queues"):
            pipeline.srem(f"rq:workers:{queue_key.decode().removeprefix('rq:queue:')}", worker_key)
        pipeline.delete(worker_key)
        pipeline.execute()
