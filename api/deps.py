"""FastAPI dependencies: the long-lived objects made in ``lifespan`` and kept on app.state."""

from typing import Annotated

import redis
import redis.asyncio as aioredis
from fastapi import Depends, Request

from api.access.identity import Identity
from api.core.respond import JobExchange
from api.core.runner import JobRunner
from shared.errors import ErrorCode, MlxqError
from shared.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _runner(request: Request) -> JobRunner:
    return request.app.state.runner


def _redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def _async_redis(request: Request) -> aioredis.Redis:
    return request.app.state.async_redis


def _identity(request: Request) -> Identity:
    """Who is calling: resolved once by the edge (api/edge/api_key.py)."""
    identity = getattr(request.state, "identity", None)
    if identity is None:  # an open path's route asked for it: a bug, never a way in
        raise MlxqError("This route needs an API key.", code=ErrorCode.UNAUTHORIZED)
    return identity


def _job_exchange(request: Request) -> JobExchange:
    state = request.app.state
    return JobExchange(
        request,
        state.runner,
        state.settings,
        state.redis,
        _identity(request),
        state.limiter,
        state.accounting,
    )


SettingsDep = Annotated[Settings, Depends(_settings)]
RunnerDep = Annotated[JobRunner, Depends(_runner)]
RedisDep = Annotated[redis.Redis, Depends(_redis)]
"""A synchronous client, for fleet queries run in a thread (shared/fleet_view.py)."""
AsyncRedisDep = Annotated[aioredis.Redis, Depends(_async_redis)]
"""The API's asyncio client (files and batches)."""
IdentityDep = Annotated[Identity, Depends(_identity)]
"""The caller's identity: its key's name, admin or not, its limits (api/access/)."""
JobExchangeDep = Annotated[JobExchange, Depends(_job_exchange)]
"""What a route that runs a job needs (api/core/respond.py)."""
