"""The fleet of workers as Redis sees it: who is alive and which model each one serves."""

import time

import redis

from shared import keys


def live_models(connection: redis.Redis) -> dict[str, int]:
    """Model id -> number of workers that heartbeated within the liveness window."""
    since = time.time() - keys.WORKER_LIVENESS_S
    names = connection.zrangebyscore(keys.LIVE_WORKERS, since, "+inf")
    if not names:
        return {}
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hget(keys.worker_stats_key(name.decode()), "model")
        models = pipeline.execute()
    counts: dict[str, int] = {}
    for model in models:
        if model is not None:
            counts[model.decode()] = counts.get(model.decode(), 0) + 1
    return counts


def silent_workers(connection: redis.Redis) -> list[str]:
    """Workers registered as live whose heartbeat stopped more than WORKER_LIVENESS_S ago."""
    cutoff = time.time() - keys.WORKER_LIVENESS_S
    return [name.decode() for name in connection.zrangebyscore(keys.LIVE_WORKERS, "-inf", cutoff)]
