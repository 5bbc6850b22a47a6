"""What the fleet serves, for the API (the Redis side lives in shared/fleet.py)."""

import asyncio
import time

import redis

from shared import history, rq_bridge
from shared.errors import ModelNotFound
from shared.fleet import live_models
from shared.settings import Settings


async def served_models(connection: redis.Redis) -> dict[str, int]:
    return await asyncio.to_thread(live_models, connection)


async def check_model(connection: redis.Redis, settings: Settings, model: str) -> None:
    """The default model is always accepted (its worker may be starting); another model
    needs a live worker now, or the request is refused at once instead of waiting."""
    if model == settings.model:
        return
    served = await served_models(connection)
    if model not in served:
        available = sorted({settings.model, *served})
        raise ModelNotFound(f"The model {model!r} is not served here. Served models: {available}.")


def record_history(connection: redis.Redis, tally: history.ApiTally) -> None:
    """This API process's share of the fleet's history (its beat calls this each second):
    what it saw since the last beat, and the queue depths as they are now."""
    depths = {name: queued for name, queued, _ in rq_bridge.queue_depths(connection)}
    history.record_api_beat(connection, tally, depths, time.time())
