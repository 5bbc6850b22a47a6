"""What the fleet of workers serves right now, from their heartbeats in Redis."""

import time

import redis.asyncio as aioredis

from shared import keys
from shared.errors import ModelNotFound
from shared.settings import Settings


async def live_models(connection: aioredis.Redis) -> dict[str, int]:
    """Model id -> number of workers that heartbeated within the liveness window."""
    since = time.time() - keys.WORKER_LIVENESS_S
    names = await connection.zrangebyscore(keys.LIVE_WORKERS, since, "+inf")
    if not names:
        return {}
    async with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hget(keys.worker_stats_key(name.decode()), "model")
        models = await pipeline.execute()
    counts: dict[str, int] = {}
    for model in models:
        if model is not None:
            counts[model.decode()] = counts.get(model.decode(), 0) + 1
    return counts


async def check_model(connection: aioredis.Redis, settings: Settings, model: str) -> None:
    """The default model is always accepted (its worker may be starting); another model
    needs a live worker now, or the request is refused at once instead of waiting."""
    if model == settings.model:
        return
    served = await live_models(connection)
    if model not in served:
        available = sorted({settings.model, *served})
        raise ModelNotFound(f"The model {model!r} is not served here. Served models: {available}.")
