"""One job's RQ record: fetched as RQ reads it, and kept without its prompt once it ended."""

from __future__ import annotations

import zlib
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except Exception:  # gone (expired, deleted) or unreadable: nothing to recover
        return None


def job_queue(connection: redis.Redis, job: Job) -> Queue:
    return Queue(job.origin, connection=connection, serializer=JSONSerializer)


def is_started(job: Job) -> bool:
    return job.get_status() == JobStatus.STARTED


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
