"""Recovering the jobs of a worker that died (SIGKILL, crash, a laptop lid closed).

RQ alone notices a dead in-process worker only after job_timeout + 60 s. mlxq workers
heartbeat once a second; every API process runs ``reap`` every second, and a worker silent
for WORKER_LIVENESS_S is declared dead. Each of its jobs is then retried once on another live
worker, or failed with a clear error, and its client told. A stream that already sent text is
not retried (the client would see it twice): it ends with an error event. Jobs are recovered
one by one: a job that cannot be read (a planted payload, an unknown function) is failed alone,
and its client told; nothing of its payload reaches the log.

``decide`` holds the rule; ``reap`` reads Redis and carries the decisions out.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis
from rq.job import Job
from rq.queue import Queue

from shared import protocol, rq_bridge
from shared.errors import ErrorCode
from shared.fleet_view import servable_models
from shared.job_functions import UnreadableJob, read_job_request
from shared.keys import worker_queue_name
from shared.schemas import ErrorEvent, JobEvent, TokenEvent

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""A job runs at most twice: once, and once more after its worker died."""
REAPED_MARK_TTL_S = 86400
"""How long a reaped worker's mark waits for it to wake (a Mac may sleep overnight)."""


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "fail"]
    reason: str = ""


def decide(attempts: int, events: list[JobEvent], model_is_served: bool) -> Decision:
    """What to do with a started job whose worker died."""
    if any(isinstance(event, TokenEvent) for event in events):
        return Decision("fail", "it had already streamed part of its answer")
    if attempts >= MAX_ATTEMPTS:
        return Decision("fail", "it was already retried once")
    if not model_is_served:
        return Decision("fail", "no other live worker serves its model")
    return Decision("retry")


def reap(connection: redis.Redis, event_ttl_s: int) -> list[str]:
    """Recover the jobs of every dead worker; returns the names of the workers reaped."""
    reaped = []
    for name in protocol.silent_workers(connection):
        if not protocol.claim_silent_worker(connection, name):
            continue  # another API process is reaping it
        log.warning("worker %s stopped heartbeating; recovering its jobs", name)
        _reap_worker(connection, name, event_ttl_s)
        reaped.append(name)
    return reaped


def _reap_worker(connection: redis.Redis, name: str, event_ttl_s: int) -> None:
    """Job by job: a job that cannot be recovered is failed on its own, and never keeps the
    others, or the worker's own clean-up, from happening."""
    with connection.pipeline() as pipeline:  # if it only paused, it will learn it
        protocol.add_reaped_mark(pipeline, name, REAPED_MARK_TTL_S)
        pipeline.execute()
    for job_id in protocol.running_jobs(connection, name):
        try:
            _recover(connection, job_id, name, event_ttl_s)
        except Exception as exc:  # no exc_info: a traceback could quote the job's request
            log.error("job %s: could not be recovered (%s); failing it", job_id, type(exc).__name__)
            _tell_lost(connection, job_id, name, "it could not be recovered", event_ttl_s)
    _clean_up(name, "its running set", protocol.forget_running_jobs, connection)
    _clean_up(name, "its own queues", _release_own_queues, connection)
    _clean_up(name, "its catalogue", protocol.forget_catalogue, connection)
    _clean_up(name, "its RQ records", rq_bridge.forget_worker, connection)


def _clean_up(
    worker: str, what: str, step: Callable[[redis.Redis, str], object], connection: redis.Redis
) -> None:
    """One step of forgetting a dead worker; a failed step does not stop the next ones."""
    try:
        step(connection, worker)
    except Exception as exc:
        log.error("worker %s: could not clear %s (%s)", worker, what, type(exc).__name__)


def _release_own_queues(connection: redis.Redis, worker: str) -> None:
    for queue_name in _own_queues(connection, worker):
        rq_bridge.release_queue(connection, queue_name)


def _recover(connection: redis.Redis, job_id: str, worker: str, event_ttl_s: int) -> None:
    job = rq_bridge.fetch_job(connection, job_id)
    if job is None:  # gone from RQ (or unreadable to it): its waiter may still wait
        _tell_lost(connection, job_id, worker, "its job record is gone", event_ttl_s)
        return
    if not rq_bridge.is_started(job):
        return
    queue = rq_bridge.job_queue(connection, job)
    events = protocol.read_events(connection, job_id)
    try:
        request = read_job_request(job)
    except UnreadableJob as exc:  # its message quotes nothing of the payload
        log.warning("job %s: %s; failing it", job_id, exc)
        reason = f"its request could not be read ({exc})"
        _fail(connection, job, queue, _lost(worker, reason), protocol.next_seq(events), event_ttl_s)
        return
    attempts = rq_bridge.runs_so_far(connection, job)
    decision = decide(attempts, events, request.model in servable_models(connection))
    if decision.action == "retry":
        _retry(connection, job, queue, attempts + 1)
    else:
        message = _lost(worker, decision.reason)
        _fail(connection, job, queue, message, protocol.next_seq(events), event_ttl_s)


def _lost(worker: str, reason: str) -> str:
    """The error message a client of a failed job reads."""
    return f"The worker running this request stopped responding ({worker}); {reason}."


def _tell_lost(
    connection: redis.Redis, job_id: str, worker: str, reason: str, event_ttl_s: int
) -> None:
    """The waiter of a job that could not be recovered is answered at once (unless the job
    already ended): it does not wait for its own deadline."""
    try:
        events = protocol.read_events(connection, job_id)
        if any(event.type in ("done", "error") for event in events):
            return
        message = _lost(worker, reason)
        event = ErrorEvent(
            seq=protocol.next_seq(events), code=ErrorCode.WORKER_LOST, message=message
        )
        protocol.publish_event(connection, job_id, event, event_ttl_s)
    except Exception as exc:
        log.error("job %s: could not tell its client (%s)", job_id, type(exc).__name__)


def _retry(connection: redis.Redis, job: Job, queue: Queue, attempt: int) -> None:
    log.warning("job %s: retrying on another worker", job.id)
    with connection.pipeline() as pipeline:
        protocol.add_release_job(pipeline, job.id)  # the next worker to take it runs it
        rq_bridge.add_requeue_at_front(pipeline, job, queue, attempt)
        pipeline.execute()


def _fail(
    connection: redis.Redis, job: Job, queue: Queue, message: str, seq: int, event_ttl_s: int
) -> None:
    log.warning("job %s: failed: %s", job.id, message)
    event = ErrorEvent(seq=seq, code=ErrorCode.WORKER_LOST, message=message)
    with connection.pipeline() as pipeline:
        rq_bridge.add_failure(pipeline, job, queue, f"{ErrorCode.WORKER_LOST}: {message}")
        protocol.add_event(pipeline, job.id, event, event_ttl_s)
        pipeline.execute()


def _own_queues(connection: redis.Redis, worker: str) -> list[str]:
    """The dead worker's own queues (requests routed to it), found among RQ's queues."""
    suffix = worker_queue_name("", worker)
    return [q for q in rq_bridge.queue_names(connection) if q.endswith(suffix)]
