"""Worker records: each worker's heartbeat (a sorted set of last-beat times), its typed stats
hash, the set of jobs it runs (so they can be recovered if it dies) and the mark the reaper
leaves on a worker it declared dead.

Which live workers count as serving a model is shared/fleet_view.py's rule, on these records.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from shared.protocol.common import PREFIX, text
from shared.protocol.model_records import HeldModel

WORKER_LIVENESS_S = 5.0
"""A worker whose last heartbeat is older than this is not counted as live."""
HEARTBEAT_INTERVAL_S = 1.0
"""How often a worker heartbeats: several beats fit in WORKER_LIVENESS_S."""
DISCONNECTED_AFTER_S = 1.5
"""A beat this old, from a worker with no connection left in Redis: it is gone (a live worker
always holds its connections: its blocking dequeue, its listeners)."""
ROUTE_LIVENESS_S = 2.0
"""A request is routed to a worker's own queue only if it beat this recently: one whose
liveness is in doubt gets no request that would wait for it."""
STATS_GRACE_S = 60
"""A stats hash outlives its worker's RQ registration by this much, then expires."""

LIVE_WORKERS = f"{PREFIX}:workers:live"
"""Sorted set: worker name -> time of its last heartbeat."""


def worker_stats_key(worker_name: str) -> str:
    return f"{PREFIX}:worker:{worker_name}:stats"


def worker_jobs_key(worker_name: str) -> str:
    return f"{PREFIX}:worker:{worker_name}:jobs"


def worker_reaped_key(worker_name: str) -> str:
    """Set by the reaper when it declares a worker dead; the worker, if it wakes, sees it."""
    return f"{PREFIX}:worker:{worker_name}:reaped"


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
    prefix_cache_budget_bytes: int = 0
    """The most the prefix cache may hold (MLXQ_PREFIX_CACHE_BYTES or its default)."""
    kv_cache_bytes: int = 0
    """KV cache the running sequences hold now."""
    kv_cache_budget_bytes: int = 0
    """The most they can hold: every slot at the model's full context."""
    prefix_cache_queried_tokens: int = 0
    """Prompt tokens looked up in the prefix cache since the worker started."""
    draft_tokens_proposed: int = 0
    """Speculative decoding's draft tokens proposed since the worker started..."""
    draft_tokens_accepted: int = 0
    """...and how many of them the model accepted."""
    prefix_cache_hit_tokens: int = 0
    """Of those, the tokens whose KV came from the cache."""
    suggested_temperature: float | None = None
    """The model's own temperature (its generation_config.json), where it names one."""
    names_connections: bool = False
    """The worker's Redis connections carry its name (``worker_connection_name``): when it
    has none left, it is gone (a killed process's sockets close at once)."""
    # Models on demand: what the worker holds loaded and loads now (its catalogue, what it
    # may load, is a record of its own: shared/protocol/model_records.py).
    held: list[HeldModel] | None = None
    """None: a worker that does not say (older ones, test fakes) holds its ``model``."""
    loading: list[str] = []
    memory_budget: int = 0
    """Bytes of weights it may hold (MLXQ_MEMORY_BUDGET)."""
    memory_used: int = 0
    """Bytes of weights it holds (each shared base counted once)."""
    group_ranks: int = 1
    """A worker group (one model split over processes, worker/group): its ranks; 1: alone."""
    group_hosts: list[str] = []
    """The group's hosts, by rank."""
    group_split: str | None = None
    """How the group split its model: 'tensor' or 'pipeline'."""

    @property
    def holdings(self) -> list[HeldModel]:
        """The models it holds loaded (its ``model`` when it does not say)."""
        if self.held is not None:
            return self.held
        return [HeldModel(model=self.model, bytes=0, own_bytes=0)] if self.model else []

    def holds(self, model: str) -> bool:
        return any(h.model == model for h in self.holdings)

    @property
    def held_models(self) -> list[str]:
        return [h.model for h in self.holdings]

    @property
    def takes_jobs(self) -> bool:
        """A live worker with these stats takes jobs: it loaded a model and is not suspended.
        The one rule for "serves its model" (shared/fleet_view.py counts by it)."""
        return self.model is not None and not self.suspended

    def to_hash(self) -> dict[str, str | int | float]:
        fields = self.model_dump(exclude_none=True)
        fields["queues"] = ",".join(self.queues)
        fields["suspended"] = int(self.suspended)
        fields["names_connections"] = int(self.names_connections)
        if self.held is not None:
            fields["held"] = json.dumps([h.model_dump() for h in self.held])
        fields["loading"] = json.dumps(self.loading)
        fields["group_hosts"] = json.dumps(self.group_hosts)
        return fields

    @classmethod
    def from_hash(cls, fields: dict[bytes, bytes]) -> WorkerStats:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        queues = [q for q in decoded.pop("queues", "").split(",") if q]
        lists = {
            name: json.loads(decoded.pop(name))
            for name in ("held", "loading", "group_hosts")
            if name in decoded
        }
        return cls.model_validate({**decoded, "queues": queues, **lists})


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
    return [(text(name), float(beat)) for name, beat in beats]


def worker_connection_name(worker: str) -> str:
    """The client name a worker gives its Redis connections (CLIENT SETNAME)."""
    return f"{PREFIX}-worker:{worker}"


def silent_workers(connection: redis.Redis) -> list[str]:
    """Workers registered as live that are gone: their heartbeat stopped more than
    WORKER_LIVENESS_S ago, or DISCONNECTED_AFTER_S ago with no connection of theirs left in
    Redis (a killed worker is noticed in about two seconds, not five; a paused one, whose
    connections stay open, after the liveness window)."""
    now = time.time()
    beats: Any = connection.zrangebyscore(
        LIVE_WORKERS, "-inf", now - DISCONNECTED_AFTER_S, withscores=True
    )
    silent = [text(name) for name, beat in beats if beat < now - WORKER_LIVENESS_S]
    doubtful = [text(name) for name, beat in beats if beat >= now - WORKER_LIVENESS_S]
    if doubtful:
        connected = {client.get("name") for client in connection.client_list()}
        for name, stats in zip(doubtful, read_stats(connection, doubtful), strict=True):
            if stats.names_connections and worker_connection_name(name) not in connected:
                silent.append(name)
    return silent


def claim_silent_worker(connection: redis.Redis, name: str) -> bool:
    """Take a silent worker off the live set; False when another API process already did."""
    return connection.zrem(LIVE_WORKERS, name) == 1


def read_stats(connection: redis.Redis, names: list[str]) -> list[WorkerStats]:
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hgetall(worker_stats_key(name))
        return [WorkerStats.from_hash(fields) for fields in pipeline.execute()]


async def read_live_workers_async(connection: aioredis.Redis) -> list[tuple[str, WorkerStats]]:
    """(name, stats) of every worker that heartbeated within WORKER_LIVENESS_S."""
    names = await connection.zrangebyscore(LIVE_WORKERS, time.time() - WORKER_LIVENESS_S, "+inf")
    if not names:
        return []
    async with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hgetall(worker_stats_key(text(name)))
        replies = await pipeline.execute()
    return [
        (text(name), WorkerStats.from_hash(fields))
        for name, fields in zip(names, replies, strict=True)
    ]


def add_running_job(pipeline: Any, worker: str, job_id: str) -> None:
    pipeline.sadd(worker_jobs_key(worker), job_id)


def remove_running_job(pipeline: Any, worker: str, job_id: str) -> None:
    pipeline.srem(worker_jobs_key(worker), job_id)


def running_jobs(connection: redis.Redis, worker: str) -> list[str]:
    job_ids: Any = connection.smembers(worker_jobs_key(worker))
    return [text(job_id) for job_id in job_ids]


def forget_running_jobs(connection: redis.Redis, worker: str) -> None:
    connection.delete(worker_jobs_key(worker))


async def worker_has_room(
    connection: aioredis.Redis, worker: str, model: str | None = None
) -> bool:
    """The worker heartbeated within ROUTE_LIVENESS_S (its liveness is not in doubt), takes
    jobs, reported a free slot and holds ``model`` loaded (when given: a worker that unloaded
    it no longer serves its own queue of it)."""
    async with connection.pipeline(transaction=False) as pipeline:
        pipeline.zscore(LIVE_WORKERS, worker)
        pipeline.hgetall(worker_stats_key(worker))
        beat, fields = await pipeline.execute()
    if beat is None or time.time() - float(beat) > ROUTE_LIVENESS_S:
        return False
    stats = WorkerStats.from_hash(fields)
    holds = model is None or stats.holds(model)
    return stats.takes_jobs and stats.running < stats.slots and holds


def add_reaped_mark(pipeline: Any, worker: str, ttl_s: int) -> None:
    pipeline.set(worker_reaped_key(worker), 1, ex=ttl_s)
