"""``mlxq api``: the FastAPI app. It validates, enqueues and waits; it never loads a model."""

import asyncio
import contextlib
import ipaddress
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.batch.driver import BatchDriver
from api.errors import (
    install_error_handlers,
    is_anthropic_route,
    is_ollama_route,
    is_openai_route,
)
from api.events import EventHub
from api.fleet import record_history
from api.http_edge import guarded_protocol, raise_open_file_limit
from api.jobs import JobRunner
from api.metrics import Metrics
from api.middleware import ApiKey, BodyLimit, HostGuard, RequestLog
from api.reaper import REAP_INTERVAL_S, reap
from api.routes import (
    anthropic,
    ask,
    batches,
    chat,
    completions,
    embeddings,
    files,
    fleet,
    health,
    metrics,
    models,
    ollama,
    responses,
)
from api.submit import JobSubmitter
from shared import protocol
from shared.history import ApiTally
from shared.redis_clients import async_command_client, command_client
from shared.settings import Settings, get_settings, without_password

log = logging.getLogger("mlxq.api")

STATIC_DIR = Path(__file__).parent / "static"
"""The web page at ``/`` (plain HTML, CSS and JavaScript; no build step)."""


async def _reap_forever(
    connection: redis.Redis, event_ttl_s: int, instance: str, tally: ApiTally
) -> None:
    """Once a second: this process says it is alive, adds what it saw to the fleet's history,
    and dead workers' jobs are recovered."""
    while True:
        try:
            await asyncio.to_thread(protocol.beat_api, connection, instance)
            await asyncio.to_thread(reap, connection, event_ttl_s)
            # Last: the charts' figures must never stand in the way of recovering jobs.
            await asyncio.to_thread(record_history, connection, tally.take())
        except redis.RedisError as exc:
            log.debug("reaper: Redis unavailable (%s)", exc)
        except Exception:
            log.exception("reaper failed")
        await asyncio.sleep(REAP_INTERVAL_S)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    connection, sync_connection = async_command_client(settings.redis_url), app.state.redis
    hub = EventHub(settings.redis_url)
    await hub.start()
    submitter = JobSubmitter(connection, settings)
    app.state.async_redis = connection
    app.state.runner = JobRunner(connection, hub, submitter, settings, app.state.metrics)
    runner: JobRunner = app.state.runner
    reaper = asyncio.create_task(
        _reap_forever(
            sync_connection, settings.event_ttl, runner.instance, app.state.metrics.recent
        )
    )
    batches = asyncio.create_task(
        BatchDriver(connection, runner, submitter, settings).run_forever()
    )
    log.info("mlxq api: model %s, redis %s", settings.model, without_password(settings.redis_url))
    try:
        yield
    finally:
        for task in (batches, reaper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hub.close()
        await connection.aclose()
        sync_connection.close()


MULTIPART_FRAMING_BYTES = 64 * 1024
"""Room for a file upload's multipart headers and other fields beside the file itself."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="mlxq", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    # For fleet queries, metrics and the reaper, run in threads (they use RQ's sync API).
    app.state.redis = command_client(settings.redis_url)
    app.state.metrics = Metrics(app.state.redis)
    install_error_handlers(app)
    _document_v1_invalid_input_as_400(app)
    dialects = (anthropic, ollama, responses)
    for route_module in (
        ask,
        files,
        batches,
        chat,
        completions,
        embeddings,
        models,
        fleet,
        metrics,
        health,
        *dialects,
    ):
        app.include_router(route_module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    # Added innermost first: RequestLog -> CORS -> ApiKey -> BodyLimit -> routes.
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout,
        upload_paths=frozenset({"/v1/files"}),
        max_upload_bytes=settings.max_file_bytes + MULTIPART_FRAMING_BYTES,
    )
    if settings.api_key is not None:
        app.add_middleware(ApiKey, key=settings.api_key.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            # Any header: the browser openai SDK sends a changing set of x-stainless-* headers
            # (client and retry info); the allowed origins are what keeps others out.
            allow_headers=["*"],
        )
    if settings.api_key is None:
        app.add_middleware(
            HostGuard, hosts=_own_names(settings), origins=frozenset(settings.cors_origins)
        )
    app.add_middleware(RequestLog, count=lambda route, status: _count(app, route, status))
    return app


def _document_v1_invalid_input_as_400(app: FastAPI) -> None:
    """/v1 answers invalid input with OpenAI's 400 (api/errors.py), never FastAPI's 422, which
    FastAPI documents on every route with a body: drop it from the /v1 operations."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema["paths"].items():
                if is_openai_route(path) or is_anthropic_route(path) or is_ollama_route(path):
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
            return schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _own_names(settings: Settings) -> frozenset[str]:
    """The Host names requests may carry when no API key is set."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in settings.allowed_hosts}
    if settings.host not in ("0.0.0.0", "::"):
        names.add(f"[{settings.host}]" if ":" in settings.host else settings.host.lower())
    return frozenset(names)


def _count(app: FastAPI, route: str, status: str) -> None:
    app.state.metrics.requests.labels(route=route, status=status).inc()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> str | None:
    """Why the API must not start as configured, or None."""
    if _is_loopback(settings.host) or settings.api_key is not None or settings.allow_insecure:
        return None
    return (
        f"refusing to listen on {settings.host} without an API key: anyone who can reach it "
        "could use the model. Set MLXQ_API_KEY, or MLXQ_ALLOW_INSECURE=true if the network "
        "is already closed to others."
    )


def run() -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = check_exposure(settings)
    if problem is not None:
        print(f"mlxq api: {problem}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout),
        timeout_keep_alive=int(max(1, settings.keepalive_timeout)),
        limit_concurrency=settings.max_connections,
        log_level=settings.log_level.lower(),
        access_log=False,  # RequestLog logs each request with its id and timing
    )
    return 0
