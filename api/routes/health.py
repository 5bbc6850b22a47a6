"""``GET /health`` (the process is up; touches nothing) and ``GET /ready`` (Redis answers and
a live worker serves the default model: the API can answer /ask now)."""

import asyncio

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import RedisDep, SettingsDep
from shared.fleet import live_models

router = APIRouter(tags=["health"])


@router.head("/health", include_in_schema=False)  # load balancers probe with HEAD
@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready, with the reason"}})
async def ready(connection: RedisDep, settings: SettingsDep) -> JSONResponse:
    try:
        served = await asyncio.to_thread(live_models, connection)
    except redis.RedisError as exc:
        return _not_ready(f"Redis is unreachable: {exc}")
    workers = served.get(settings.model, 0)
    if workers == 0:
        return _not_ready(f"No live worker serves the default model {settings.model!r}.")
    return JSONResponse({"status": "ready", "model": settings.model, "workers": workers})


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
