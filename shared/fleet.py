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


def snapshot(connection: redis.Redis) -> dict:
    """Workers (live ones), queue depths and failed-job counts: for /fleet and `mlxq status`."""
    since = time.time() - keys.WORKER_LIVENESS_S
    beats = connection.zrangebyscore(keys.LIVE_WORKERS, since, "+inf", withscores=True)
    with connection.pipeline(transaction=False) as pipeline:
        for name, _ in beats:
            pipeline.hgetall(keys.worker_stats_key(name.decode()))
        stats = pipeline.execute()
    workers = [
        _worker_row(name.decode(), beat, {k.decode(): v.decode() for k, v in fields.items()})
        for (name, beat), fields in zip(beats, stats, strict=True)
    ]
    queue_names = sorted(
        q.decode().removeprefix("rq:queue:") for q in connection.smembers("rq:queues")
    )
    with connection.pipeline(transaction=False) as pipeline:
        for name in queue_names:
            pipeline.llen(f"rq:queue:{name}")
            pipeline.zcard(f"rq:failed:{name}")
        counts = pipeline.execute()
    models = {q: w["model"] for w in workers for q in w["queues"]}
    queues = [
        {"queue": name, "model": models.get(name), "queued": queued, "failed": failed}
        for name, queued, failed in zip(queue_names, counts[::2], counts[1::2], strict=True)
    ]
    return {"workers": workers, "queues": queues}


def _worker_row(name: str, last_beat: float, stats: dict[str, str]) -> dict:
    return {
        "name": name,
        "host": stats.get("host"),
        "model": stats.get("model"),
        "queues": [q for q in stats.get("queues", "").split(",") if q],
        "slots": int(stats.get("slots", 0)),
        "running": int(stats.get("running", 0)),
        "tokens_per_s": float(stats.get("tokens_per_s", 0.0)),
        "tokens_total": int(stats.get("tokens_total", 0)),
        "seconds_since_heartbeat": round(max(0.0, time.time() - last_beat), 1),
    }
