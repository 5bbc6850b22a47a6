"""``GET /fleet``: live workers (host, model, busy slots, tokens/s) and queue depths, as JSON
for the web page and ``mlxq status``."""

import asyncio

from fastapi import APIRouter

from api.deps import RedisDep
from shared.fleet import snapshot

router = APIRouter(tags=["fleet"])


@router.get("/fleet")
async def fleet(connection: RedisDep) -> dict:
    return await asyncio.to_thread(snapshot, connection)
