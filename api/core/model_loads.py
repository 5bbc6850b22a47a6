"""Loading and unloading a model with nothing to generate: Ollama's ``/api/generate`` and
``/api/chat`` without a prompt (``ollama run`` preloads this way; ``ollama stop`` sends
``keep_alive: 0``).

A load is asked of the fleet (a wish: shared/protocol/model_records.py), which the
placement treats as a request waiting (worker/placement.py); the API waits until a live
worker holds the model. An unload is asked of every worker holding it: each unloads it as
soon as it is idle, within a second.
"""

import asyncio
import time

import redis.asyncio as aioredis

from api.core.models import refusal
from shared import protocol
from shared.errors import InvalidRequest, JobTimedOut, NoWorkerAvailable
from shared.fleet_view import FleetModel, availability

LOAD_POLL_S = 0.2
"""How often a load request looks whether a worker holds the model yet."""


async def load_now(
    connection: aioredis.Redis,
    model: str,
    keep_alive: float | None,
    deadline: float,
    no_worker_after_s: float,
) -> float:
    """Have a worker load ``model`` and wait until one holds it; returns the seconds waited
    (0: it was loaded already). ``keep_alive`` is given to the model on the workers holding
    it. Raises the refusal of a model no worker can load, NoWorkerAvailable when no live
    worker lists it for ``no_worker_after_s`` seconds, JobTimedOut at ``deadline`` (Unix)."""
    started = time.monotonic()
    async with connection.pipeline(transaction=False) as pipeline:
        protocol.add_load_wish(pipeline, model, keep_alive)
        await pipeline.execute()
    while True:
        state, seen = await availability(connection, model)
        if state == "served":
            return time.monotonic() - started if seen and _loaded_since(seen, started) else 0.0
        if state == "refused" and seen is not None:
            raise refusal(seen)
        if state == "none" and time.monotonic() - started > no_worker_after_s:
            raise NoWorkerAvailable(f"No live worker may load the model {model!r}.")
        if time.time() >= deadline:
            raise JobTimedOut(f"The model {model!r} was not loaded before the deadline.")
        await asyncio.sleep(LOAD_POLL_S)


def _loaded_since(seen: FleetModel, started: float) -> bool:
    """Some worker finished loading the model after the request arrived."""
    now_unix, now = time.time(), time.monotonic()
    arrived = now_unix - (now - started)
    return any(held.loaded_at >= arrived for _, held in seen.held_by)


async def unload_now(connection: aioredis.Redis, model: str) -> None:
    """Ask every worker holding ``model`` to unload it once idle (within a second)."""
    async with connection.pipeline(transaction=False) as pipeline:
        protocol.add_unload_request(pipeline, model)
        await pipeline.execute()


async def refuse_unloading_a_group(connection: aioredis.Redis, model: str) -> None:
    """A worker group never unloads its model (its ranks could not load it again: worker/
    group): an unload asked of one is refused, not answered as done."""
    for name, stats in await protocol.read_live_workers_async(connection):
        if stats.group_ranks > 1 and stats.holds(model):
            raise InvalidRequest(
                f"The model {model!r} is held by a worker group ({name}, {stats.group_ranks} "
                "ranks), which keeps it loaded until the group is stopped: keep_alive 0 "
                "cannot unload it."
            )
