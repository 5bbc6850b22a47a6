"""``GET /fleet``: live workers (host, model, busy slots, tokens/s) and queue depths, as JSON
for the web page and ``mlxq status``; ``GET /fleet/history``: the same figures over the last
15 minutes, for the page's charts."""

import asyncio

from fastapi import APIRouter

from api.deps import RedisDep
from shared.fleet import snapshot
from shared.history import read_history

router = APIRouter(tags=["fleet"])


@router.get("/fleet")
async def fleet(connection: RedisDep) -> dict:
    return await asyncio.to_thread(snapshot, connection)


@router.get("/fleet/history")
async def fleet_history(connection: RedisDep) -> dict:
    """Aligned series, one point per step (see shared/history.py), ``null`` where a step has
    no figure: per worker tokens/s and busy slots, per queue depth, and fleet-wide requests/s
    and median time to first token."""
    return await asyncio.to_thread(read_history, connection)
