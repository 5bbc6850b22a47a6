"""``mlxq api``: the FastAPI app. It validates, enqueues and waits; it never loads a model."""

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from api.errors import install_error_handlers
from api.events import EventHub
from api.jobs import JobRunner
from api.routes import ask, chat, completions, health, models
from api.submit import JobSubmitter
from shared.settings import Settings, get_settings

log = logging.getLogger("mlxq.api")

REDIS_POOL_SIZE = 64
"""Connections for enqueueing: waits share one pub/sub connection, so this bounds bursts only."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_POOL_SIZE, timeout=5, socket_connect_timeout=2
    )
    connection = aioredis.Redis(connection_pool=pool)
    hub = EventHub(settings.redis_url)
    await hub.start()
    app.state.redis = connection
    app.state.runner = JobRunner(connection, hub, JobSubmitter(connection, settings), settings)
    log.info(
        "mlxq api: model %s, queue %s, redis %s",
        settings.model,
        settings.queue_name,
        settings.redis_url,
    )
    try:
        yield
    finally:
        await hub.close()
        await connection.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(title="mlxq", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings or get_settings()
    if app.state.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=app.state.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.middleware("http")(_log_requests)
    install_error_handlers(app)
    for route_module in (ask, chat, completions, models, health):
        app.include_router(route_module.router)
    return app


async def _log_requests(request: Request, call_next) -> Response:
    """One line per request: id, route, status, time; never the prompt or the answer."""
    request.state.request_id = request_id = uuid.uuid4().hex[:12]
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["x-request-id"] = request_id
    log.info(
        "%s %s %s -> %d in %.1f ms",
        request_id,
        request.method,
        request.url.path,
        response.status_code,
        (time.perf_counter() - started) * 1000,
    )
    return response


def run() -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # _log_requests logs each request with its id and timing
    )
    return 0
