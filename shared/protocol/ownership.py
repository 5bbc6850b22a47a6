"""Ownership: one worker runs a job, and only while it still owns it; and which worker holds
a conversation's prefix in its cache (cache-aware routing, shared/routing.py)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from shared.protocol.common import PREFIX, text
from shared.protocol.job_events import STREAM_MAXLEN, job_events_channel, job_events_stream
from shared.protocol.worker_records import worker_jobs_key
from shared.schemas import JobEvent

PUBLISH_IF_RUNNING = """
local jobs_key = KEYS[1]
local ttl = tonumber(ARGV[1])
local maxlen = ARGV[2]
local refused = {}
for i = 3, #ARGV, 5 do
  local job, stream, channel, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if redis.call('SISMEMBER', jobs_key, job) == 1 then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', data)
    redis.call('EXPIRE', stream, ttl)
    redis.call('PUBLISH', channel, data)
    if ARGV[i + 4] == '1' then redis.call('SREM', jobs_key, job) end
  else
    refused[#refused + 1] = job
  end
end
return refused
"""
"""Publish events only for jobs still in the worker's running set. The reaper empties that
set when it declares the worker dead, so a worker that wakes from a pause can no longer
answer for jobs that were retried or failed meanwhile."""


def job_owner_key(job_id: str) -> str:
    """Which worker started a job: set once (NX), so a job taken twice runs once."""
    return f"{PREFIX}:job:{job_id}:owner"


def claim_job(connection: redis.Redis, job_id: str, worker: str, ttl_s: int) -> bool:
    """Become the job's one runner; False when it was started already (by another worker, or
    by this one: a copy put back in a queue must not run twice)."""
    return bool(connection.set(job_owner_key(job_id), worker, nx=True, ex=ttl_s))


def job_suspect_key(job_id: str) -> str:
    """Set when a job was seen taken from its queue but not started (see rq_bridge)."""
    return f"{PREFIX}:job:{job_id}:suspect"


def add_release_job(pipeline: Any, job_id: str) -> None:
    """The job goes back to a queue: whoever takes it next may run it."""
    pipeline.delete(job_owner_key(job_id))


def publish_if_running(
    connection: redis.Redis, worker: str, events: list[tuple[str, JobEvent]], ttl_s: int
) -> set[str]:
    """Publish each job's events if the worker still runs the job (a job's last event also
    takes it off the running set); returns the jobs it no longer runs (events dropped)."""
    if not events:
        return set()
    args: list[Any] = [ttl_s, STREAM_MAXLEN]
    for job_id, event in events:
        data = event.model_dump_json()
        final = "1" if event.type in ("done", "error") else "0"
        args += [job_id, job_events_stream(job_id), job_events_channel(job_id), data, final]
    refused: Any = connection.eval(PUBLISH_IF_RUNNING, 1, worker_jobs_key(worker), *args)
    return {text(job_id) for job_id in refused}


# -- prefix ownership (cache-aware routing) ------------------------------------------------


def prefix_owner_key(prefix_hash: str) -> str:
    """Which worker holds a conversation prefix in its cache (shared/routing.py)."""
    return f"{PREFIX}:prefix:{prefix_hash}"


def add_prefix_claims(pipeline: Any, worker: str, hashes: list[str], ttl_s: int) -> None:
    """Queue a worker's claim on conversation prefixes it holds (the last claim wins)."""
    for prefix_hash in hashes:
        pipeline.set(prefix_owner_key(prefix_hash), worker, ex=ttl_s)


async def longest_prefix_owner(connection: aioredis.Redis, hashes: list[str]) -> str | None:
    """The worker that claimed the longest of these prefixes, if any claimed one."""
    if not hashes:
        return None
    owners = await connection.mget([prefix_owner_key(h) for h in hashes])
    for owner in reversed(owners):
        if owner is not None:
            return text(owner)
    return None
