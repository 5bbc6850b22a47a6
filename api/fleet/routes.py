"""What operators and supervisors read: ``GET /health`` (the process is up; touches nothing),
``GET /ready`` (Redis answers and a live worker serves the default model), ``GET /fleet``
(live workers and queue depths, for the web page and ``mlxq status``), ``GET /fleet/history``
(the same figures over the last 15 minutes, for the page's charts) and ``GET /metrics``
(Prometheus)."""

import asyncio

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.access.identity import Identity
from api.deps import IdentityDep, RedisDep, SettingsDep
from shared.errors import ErrorCode, MlxqError
from shared.fleet_view import fleet_models, snapshot
from shared.history import read_history
from shared.keys import queue_owner

router = APIRouter(tags=["fleet"])


@router.head("/health", include_in_schema=False)  # load balancers probe with HEAD
@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


NOT_READY_RETRY_AFTER_S = 5
"""A worker starting (loading its model) or Redis restarting: ask again in a few seconds."""


@router.get("/ready", responses={503: {"description": "Not ready, with the reason"}})
async def ready(connection: RedisDep, settings: SettingsDep) -> JSONResponse:
    """Ready: a live worker that takes jobs holds the default model, or may load it (it was
    unloaded to make room for another: the next request loads it again)."""
    try:
        models = await asyncio.to_thread(fleet_models, connection)
    except redis.RedisError as exc:
        return _not_ready(f"Redis is unreachable: {exc}")
    seen = models.get(settings.model)
    workers = len(seen.servable_by) if seen else 0
    if workers == 0:
        return _not_ready(f"No live worker serves the default model {settings.model!r}.")
    loaded = any(name in seen.servable_by for name, _ in seen.held_by) if seen else False
    body = {"status": "ready", "model": settings.model, "workers": workers, "loaded": loaded}
    return JSONResponse(body)


def _not_ready(reason: str) -> JSONResponse:
    headers = {"Retry-After": str(NOT_READY_RETRY_AFTER_S)}
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503, headers=headers)


@router.get("/fleet")
async def fleet(connection: RedisDep, identity: IdentityDep) -> dict:
    """Live workers and queue depths; a key that is not an admin key sees its own queues
    beside the shared ones, not other keys'."""
    view = await asyncio.to_thread(snapshot, connection)
    view["queues"] = [q for q in view["queues"] if _may_see_queue(identity, q["queue"])]
    return view


@router.get("/fleet/history")
async def fleet_history(connection: RedisDep, identity: IdentityDep) -> dict:
    """Aligned series, one point per step (see shared/history.py), ``null`` where a step has
    no figure: per worker tokens/s and busy slots, per queue depth, and fleet-wide requests/s
    and median time to first token."""
    history = await asyncio.to_thread(read_history, connection)
    history["queues"] = [q for q in history["queues"] if _may_see_queue(identity, q["queue"])]
    return history


def _may_see_queue(identity: Identity, queue: str) -> bool:
    owner = queue_owner(queue)
    return owner is None or identity.may_see(owner)


@router.get("/metrics", response_class=Response, tags=["metrics"])
async def metrics(request: Request, identity: IdentityDep) -> Response:
    """Prometheus; it names every key and its usage, so a made key needs to be an admin key."""
    if not identity.sees_all:
        raise MlxqError("/metrics needs an admin key.", code=ErrorCode.FORBIDDEN)
    registry = request.app.state.metrics.registry
    body = await asyncio.to_thread(generate_latest, registry)  # reads Redis: not on the loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)
