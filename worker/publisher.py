"""Sending a job's events back to the API: a bounded, expiring Redis stream per job (durable,
re-readable) plus a pub/sub message on the job's channel (so the API need not poll)."""

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.schemas import JobEvent

STREAM_MAXLEN = 10_000
"""Events kept per job: more than any answer's tokens, small enough to bound memory."""


class EventPublisher:
    def __init__(self, connection: Redis, ttl_s: int) -> None:
        self._connection = connection
        self._ttl_s = ttl_s

    def add(self, pipeline: Pipeline, job_id: str, event: JobEvent) -> None:
        data = event.model_dump_json()
        stream = keys.job_events_stream(job_id)
        pipeline.xadd(stream, {"event": data}, maxlen=STREAM_MAXLEN, approximate=True)
        pipeline.expire(stream, self._ttl_s)
        pipeline.publish(keys.job_events_channel(job_id), data)

    def publish(self, job_id: str, event: JobEvent) -> None:
        with self._connection.pipeline(transaction=False) as pipeline:
            self.add(pipeline, job_id, event)
            pipeline.execute()
