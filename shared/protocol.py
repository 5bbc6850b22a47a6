"""The Redis records mlxq's own processes exchange, written and read here and nowhere else.

- **Job events**: a job's ``started``, ``token``, ``done`` and ``error`` events, numbered from 0
  by ``seq`` (each number once, in order). Each event goes to the job's stream (durable,
  re-readable, bounded by STREAM_MAXLEN, expiring) and to the job's pub/sub channel (pushed,
  so the API need not poll), in one pipeline.
- **Cancellations**: a job whose client went away is marked (for a worker that takes it
  later) and named on CANCEL_CHANNEL (for the worker running it).
- **Worker records**: every worker's heartbeat (a sorted set of last-beat times) and its
  typed stats hash, and the set of jobs it runs (so they can be recovered if it dies).

RQ's own keys (queues, registries, workers) are RQ's: see shared/rq_bridge.py. The fleet's
recent past, for charts, is shared/history.py's.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from shared.schemas import JobEvent, job_event_adapter

PREFIX = "mlxq"

STREAM_MAXLEN = 10_000
"""Events kept per job: more than any answer's tokens, small enough to bound memory."""
WORKER_LIVENESS_S = 5.0
"""A worker whose last heartbeat is older than this is not counted as live."""
HEARTBEAT_INTERVAL_S = 1.0
"""How often a worker heartbeats: several beats fit in WORKER_LIVENESS_S."""
STATS_GRACE_S = 60
"""A stats hash outlives its worker's RQ registration by this much, then expires."""

LIVE_WORKERS = f"{PREFIX}:workers:live"
"""Sorted set: worker name -> time of its last heartbeat."""
CANCEL_CHANNEL = f"{PREFIX}:cancel"
"""Pub/sub channel on which the API names jobs whose client went away; every worker listens."""


def job_events_stream(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:events"


def job_events_channel(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:notify"


def job_cancel_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:cancelled"


def worker_stats_key(worker_name: str) -> str:
    return f"{PREFIX}:worker:{worker_name}:stats"


def worker_jobs_key(worker_name: str) -> str:
    return f"{PREFIX}:worker:{worker_name}:jobs"


def prefix_owner_key(prefix_hash: str) -> str:
    """Which worker holds a conversation prefix in its cache (shared/routing.py)."""
    return f"{PREFIX}:prefix:{prefix_hash}"


def api_anchor_channel(instance: str) -> str:
    """A channel the API's event hub always holds, so its reader always waits on a socket."""
    return f"{PREFIX}:api:{instance}"


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


def _text(value: Any) -> str:
    """A Redis reply item as text (replies are bytes: clients are made without decoding)."""
    return value.decode() if isinstance(value, bytes) else str(value)


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


# -- worker records -----------------------------------------------------------------------


class WorkerStats(BaseModel):
    """What a worker publishes with each heartbeat, for /fleet, /metrics and ``mlxq status``."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    queues: list[str] = []
    host: str | None = None
    pid: int = 0
    slots: int = 0
    running: int = 0
    peak_batch: int = 0
    tokens_total: int = 0
    tokens_per_s: float = 0.0
    suspended: bool = False
    """``rq suspend`` is in force: the worker takes no job."""
    prefix_cache_bytes: int = 0
    prefix_cache_queried_tokens: int = 0
    """Prompt tokens looked up in the prefix cache since the worker started."""
    prefix_cache_hit_tokens: int = 0
    """Of those, the tokens whose KV came from the cache."""
    suggested_temperature: float | None = None
    """The model's own temperature (its generation_config.json), where it names one."""

    def to_hash(self) -> dict[str, str | int | float]:
        fields = self.model_dump(exclude_none=True)
        fields["queues"] = ",".join(self.queues)
        fields["suspended"] = int(self.suspended)
        return fields

    @classmethod
    def from_hash(cls, fields: dict[bytes, bytes]) -> WorkerStats:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        queues = [q for q in decoded.pop("queues", "").split(",") if q]
        return cls.model_validate({**decoded, "queues": queues})


_CHECK_IN = """
if redis.call('DEL', KEYS[1]) == 1 then return 1 end
redis.call('DEL', KEYS[2])
if #ARGV > 0 then redis.call('SADD', KEYS[2], unpack(ARGV)) end
return 0
"""
"""Reaped (the mark is set): 1, and nothing else. Else the worker's running set becomes
exactly the jobs it runs: a Redis restart without persistence lost them (and without them
the worker could not publish its answers), and a job that ended meanwhile drops out."""


def add_heartbeat(
    pipeline: Any, name: str, stats: WorkerStats, ttl_s: int, running: list[str]
) -> None:
    """Queue a worker's heartbeat: its stats (expiring after ``ttl_s``) and its beat time.
    Its first reply says whether the reaper declared the worker dead meanwhile (a pause)."""
    pipeline.eval(_CHECK_IN, 2, worker_reaped_key(name), worker_jobs_key(name), *running)
    key = worker_stats_key(name)
    pipeline.hset(key, mapping=stats.to_hash())
    pipeline.expire(key, ttl_s + STATS_GRACE_S)
    pipeline.zadd(LIVE_WORKERS, {name: time.time()})


def deregister_worker(connection: redis.Redis, name: str) -> None:
    connection.zrem(LIVE_WORKERS, name)


def live_worker_beats(connection: redis.Redis) -> list[tuple[str, float]]:
    """(name, time of last heartbeat) of the workers that beat within WORKER_LIVENESS_S."""
    since = time.time() - WORKER_LIVENESS_S
    beats: Any = connection.zrangebyscore(LIVE_WORKERS, since, "+inf", withscores=True)
    return [(_text(name), float(beat)) for name, beat in beats]


def silent_workers(connection: redis.Redis) -> list[str]:
    """Workers registered as live whose heartbeat stopped more than WORKER_LIVENESS_S ago."""
    cutoff = time.time() - WORKER_LIVENESS_S
    return [_text(name) for name in connection.zrangebyscore(LIVE_WORKERS, "-inf", cutoff)]


def claim_silent_worker(connection: redis.Redis, name: str) -> bool:
    """Take a silent worker off the live set; False when another API process already did."""
    return connection.zrem(LIVE_WORKERS, name) == 1


def read_stats(connection: redis.Redis, names: list[str]) -> list[WorkerStats]:
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hgetall(worker_stats_key(name))
        return [WorkerStats.from_hash(fields) for fields in pipeline.execute()]


def add_running_job(pipeline: Any, worker: str, job_id: str) -> None:
    pipeline.sadd(worker_jobs_key(worker), job_id)


def remove_running_job(pipeline: Any, worker: str, job_id: str) -> None:
    pipeline.srem(worker_jobs_key(worker), job_id)


def running_jobs(connection: redis.Redis, worker: str) -> list[str]:
    job_ids: Any = connection.smembers(worker_jobs_key(worker))
    return [_text(job_id) for job_id in job_ids]


def forget_running_jobs(connection: redis.Redis, worker: str) -> None:
    connection.delete(worker_jobs_key(worker))


# -- prefix ownership (cache-aware routing) ------------------------------------------------


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
            return _text(owner)
    return None


async def live_workers_serve(connection: aioredis.Redis, model: str) -> bool:
    """Whether a worker that heartbeated within WORKER_LIVENESS_S serves ``model``."""
    names = await connection.zrangebyscore(LIVE_WORKERS, time.time() - WORKER_LIVENESS_S, "+inf")
    if not names:
        return False
    async with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hmget(worker_stats_key(_text(name)), ["model", "suspended"])
        found = await pipeline.execute()
    return any(m is not None and _text(m) == model and s != b"1" for m, s in found)


async def worker_has_room(connection: aioredis.Redis, worker: str) -> bool:
    """The worker heartbeated within WORKER_LIVENESS_S and reported a free slot."""
    async with connection.pipeline(transaction=False) as pipeline:
        pipeline.zscore(LIVE_WORKERS, worker)
        pipeline.hmget(worker_stats_key(worker), ["running", "slots", "suspended"])
        beat, (running, slots, suspended) = await pipeline.execute()
    if beat is None or time.time() - float(beat) > WORKER_LIVENESS_S or suspended == b"1":
        return False
    return running is not None and slots is not None and int(running) < int(slots)


# -- job ownership: one worker runs a job, and only while it still owns it -----------------

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
    return {_text(job_id) for job_id in refused}


def worker_reaped_key(worker_name: str) -> str:
    """Set by the reaper when it declares a worker dead; the worker, if it wakes, sees it."""
    return f"{PREFIX}:worker:{worker_name}:reaped"


def add_reaped_mark(pipeline: Any, worker: str, ttl_s: int) -> None:
    pipeline.set(worker_reaped_key(worker), 1, ex=ttl_s)


# -- API processes: a job stops when the API process waiting for it is gone ----------------

API_ALIVE_TTL_S = 5
"""An API process beats once a second; silent this long, it is gone."""
WAITER_GRACE_S = 3.0
"""A worker stops a job only after its API process has been missing this long (a Redis
restart loses the beats for a moment)."""


def api_alive_key(instance: str) -> str:
    return f"{PREFIX}:api:{instance}:alive"


def beat_api(connection: redis.Redis, instance: str) -> float:
    """Say this API process is alive; returns how long the Redis server has been up (s)."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.set(api_alive_key(instance), 1, ex=API_ALIVE_TTL_S)
        pipeline.info("server")
        _, server = pipeline.execute()
    return float(server["uptime_in_seconds"])


def add_waiter_check(pipeline: Any, instance: str) -> None:
    """Queue a check whose reply (an int) says whether that API process is alive."""
    pipeline.exists(api_alive_key(instance))


def missing_waiters(connection: redis.Redis, instances: set[str]) -> set[str]:
    """The API processes, among these, that stopped beating."""
    ordered = sorted(instances)
    if not ordered:
        return set()
    with connection.pipeline(transaction=False) as pipeline:
        for instance in ordered:
            add_waiter_check(pipeline, instance)
        alive = pipeline.execute()
    return {instance for instance, up in zip(ordered, alive, strict=True) if not up}


def tell_waiter(connection: redis.Redis, job_id: str, event: JobEvent) -> None:
    """Only the pub/sub message of an event, for when Redis refuses writes (full): PUBLISH
    stores nothing, so it still goes through, and the waiting client hears why."""
    connection.publish(job_events_channel(job_id), event.model_dump_json())
