"""Job events and cancellations: how a job's progress reaches the client that waits for it.

- **Job events**: a job's ``started``, ``token``, ``done`` and ``error`` events, numbered from 0
  by ``seq`` (each number once, in order). Each event goes to the job's stream (durable,
  re-readable, bounded by STREAM_MAXLEN, expiring) and to the job's pub/sub channel (pushed,
  so the API need not poll), in one pipeline.
- **Cancellations**: a job whose client went away is marked (for a worker that takes it
  later) and named on CANCEL_CHANNEL (for the worker running it).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from shared.protocol.common import PREFIX
from shared.schemas import JobEvent, job_event_adapter

STREAM_MAXLEN = 10_000
"""Events kept per job: more than any answer's tokens, small enough to bound memory."""
CANCEL_CHANNEL = f"{PREFIX}:cancel"
"""Pub/sub channel on which the API names jobs whose client went away; every worker listens."""


def job_events_stream(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def job_events_channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:notify"


def job_cancel_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:cancelled"


# -- job events ---------------------------------------------------------------------------


def add_event(pipeline: Any, job_id: str, event: JobEvent, ttl_s: int) -> None:
    """Queue the event's writes on ``pipeline`` (sync or async): stream, expiry, publish."""
    data = event.model_dump_json()
    stream = job_events_stream(job_id)
    pipeline.xadd(stream, {"event": data}, maxlen=STREAM_MAXLEN, approximate=True)
    pipeline.expire(stream, ttl_s)
    pipeline.publish(job_events_channel(job_id), data)


def publish_event(connection: redis.Redis, job_id: str, event: JobEvent, ttl_s: int) -> None:
    with connection.pipeline(transaction=False) as pipeline:
        add_event(pipeline, job_id, event, ttl_s)
        pipeline.execute()


def decode_event(data: bytes | str) -> JobEvent:
    """One event as published on a job's channel."""
    return job_event_adapter.validate_json(data)


def _events_from_entries(entries: Any) -> list[JobEvent]:
    """Events from XRANGE's reply: [(entry id, {b"event": json}), ...]."""
    return [decode_event(fields[b"event"]) for _, fields in entries or []]


def read_events(connection: redis.Redis, job_id: str) -> list[JobEvent]:
    """Every event of a job still in its stream, in order."""
    return _events_from_entries(connection.xrange(job_events_stream(job_id)))


async def read_events_async(connection: aioredis.Redis, job_id: str) -> list[JobEvent]:
    return _events_from_entries(await connection.xrange(job_events_stream(job_id)))


def next_seq(events: list[JobEvent]) -> int:
    """The sequence number the next event of a job must carry."""
    return max((event.seq for event in events), default=-1) + 1


# -- cancellations ------------------------------------------------------------------------


def add_cancel_request(pipeline: Any, job_id: str, ttl_s: int) -> None:
    """Mark the job cancelled and tell the worker running it, if any."""
    pipeline.set(job_cancel_key(job_id), 1, ex=ttl_s)
    pipeline.publish(CANCEL_CHANNEL, job_id)


def add_cancel_check(pipeline: Any, job_id: str) -> None:
    """Queue a check whose reply (an int) says whether the job's client already went away."""
    pipeline.exists(job_cancel_key(job_id))


def cancelled_job_id(message: dict) -> str:
    """The job named by a message received on CANCEL_CHANNEL."""
    return message["data"].decode()


def tell_waiter(connection: redis.Redis, job_id: str, event: JobEvent) -> None:
    """Only the pub/sub message of an event, for when Redis refuses writes (full): PUBLISH
    stores nothing, so it still goes through, and the waiting client hears why."""
    connection.publish(job_events_channel(job_id), event.model_dump_json())
