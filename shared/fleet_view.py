"""The fleet as Redis sees it: who is alive, which model each serves, how deep the queues are.

Read by the API (/ready, /fleet, /metrics, the reaper, model names) and by ``mlxq status``.

Two questions about models, asked apart:

- **Which models are served** (``serving_models``, ``serves_model``): a live worker serves
  its model when it takes jobs, that is, when it is not suspended (``rq suspend``;
  ``WorkerStats.takes_jobs`` is the rule). Whatever depends on a job being run asks this: the
  reaper's retry, the API's queue timeout, ``/ready``.
- **Which models are loaded** (``loaded_models``): every live worker's model, suspended or
  not. What the fleet lists and accepts by name asks this (``/v1/models``, ``/api/tags``): a
  request for a suspended worker's model waits in its queue, it is not a 404.
"""

import time
from collections import Counter

import redis
import redis.asyncio as aioredis

from shared import protocol, rq_bridge
from shared.keys import lane_of, model_queue_of


def _live_stats(connection: redis.Redis) -> list[protocol.WorkerStats]:
    names = [name for name, _ in protocol.live_worker_beats(connection)]
    return protocol.read_stats(connection, names) if names else []


def serving_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> live workers that take its jobs now (suspended ones do not)."""
    return dict(Counter(s.model for s in _live_stats(connection) if s.takes_jobs and s.model))


async def serves_model(connection: aioredis.Redis, model: str) -> bool:
    """A live worker takes ``model``'s jobs now (``serving_models``' rule, on redis.asyncio)."""
    live = await protocol.read_live_stats_async(connection)
    return any(stats.takes_jobs and stats.model == model for stats in live)


def loaded_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> live workers that hold it loaded, suspended ones included."""
    return dict(Counter(s.model for s in _live_stats(connection) if s.model is not None))


def loaded_model_stats(connection: redis.Redis) -> dict[str, list[protocol.WorkerStats]]:
    """Model id -> the stats of the live workers that hold it loaded (``loaded_models``'
    rule): what they say of the model (capabilities, context length) is read from these."""
    by_model: dict[str, list[protocol.WorkerStats]] = {}
    for stats in _live_stats(connection):
        if stats.model is not None:
            by_model.setdefault(stats.model, []).append(stats)
    return by_model


def snapshot(connection: redis.Redis) -> dict:
    """Workers (live ones), and queues: each with its lane (``shared``, ``worker <name>``,
    ``batch``), its depth, its failed jobs and its refused requests apart; for /fleet, /metrics
    and `mlxq status`."""
    beats = protocol.live_worker_beats(connection)
    stats = protocol.read_stats(connection, [name for name, _ in beats]) if beats else []
    workers = [
        _worker_row(name, beat, worker_stats)
        for (name, beat), worker_stats in zip(beats, stats, strict=True)
    ]
    models = {model_queue_of(q): w["model"] for w in workers for q in w["queues"]}
    queues = [
        {
            "queue": depth.queue,
            "lane": lane_of(depth.queue),
            "model": models.get(model_queue_of(depth.queue)),
            "queued": depth.queued,
            "failed": depth.failed,
            "refused": depth.refused,
        }
        for depth in rq_bridge.queue_depths(connection)
    ]
    return {"workers": workers, "queues": queues}


def _worker_row(name: str, last_beat: float, stats: protocol.WorkerStats) -> dict:
    return {
        "name": name,
        "host": stats.host,
        "model": stats.model,
        "queues": stats.queues,
        "slots": stats.slots,
        "running": stats.running,
        "tokens_per_s": stats.tokens_per_s,
        "tokens_total": stats.tokens_total,
        "prefix_cache_bytes": stats.prefix_cache_bytes,
        "prefix_cache_budget_bytes": stats.prefix_cache_budget_bytes,
        "kv_cache_bytes": stats.kv_cache_bytes,
        "kv_cache_budget_bytes": stats.kv_cache_budget_bytes,
        "prefix_cache_queried_tokens": stats.prefix_cache_queried_tokens,
        "prefix_cache_hit_tokens": stats.prefix_cache_hit_tokens,
        "suggested_temperature": stats.suggested_temperature,
        "seconds_since_heartbeat": round(max(0.0, time.time() - last_beat), 1),
    }
