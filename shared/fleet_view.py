"""The fleet as Redis sees it: who is alive, which model each serves, how deep the queues are.

Read by the API (/ready, /fleet, /metrics, the reaper) and by ``mlxq status``.
"""

import time

import redis

from shared import protocol, rq_bridge


def live_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> number of workers that heartbeated within the liveness window."""
    names = [name for name, _ in protocol.live_worker_beats(connection)]
    counts: dict[str, int] = {}
    for stats in protocol.read_stats(connection, names) if names else []:
        if stats.model is not None:
            counts[stats.model] = counts.get(stats.model, 0) + 1
    return counts


def snapshot(connection: redis.Redis) -> dict:
    """Workers (live ones), queue depths and failed-job counts: for /fleet and `mlxq status`."""
    beats = protocol.live_worker_beats(connection)
    stats = protocol.read_stats(connection, [name for name, _ in beats]) if beats else []
    workers = [
        _worker_row(name, beat, worker_stats)
        for (name, beat), worker_stats in zip(beats, stats, strict=True)
    ]
    models = {q: w["model"] for w in workers for q in w["queues"]}
    queues = [
        {"queue": name, "model": models.get(name), "queued": queued, "failed": failed}
        for name, queued, failed in rq_bridge.queue_depths(connection)
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
        "prefix_cache_queried_tokens": stats.prefix_cache_queried_tokens,
        "prefix_cache_hit_tokens": stats.prefix_cache_hit_tokens,
        "suggested_temperature": stats.suggested_temperature,
        "seconds_since_heartbeat": round(max(0.0, time.time() - last_beat), 1),
    }
