"""``create_app``: the FastAPI app. It validates, enqueues and waits; it never loads a model.

The app is the core (api/core: job runner, event hub, response skeleton), each API dialect's
routes over it (api/dialects), the Batch API (api/batch), what operators read (api/fleet),
and the edge middleware in front (api/edge). ``mlxq api`` serves it (api/server.py).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api.access import routes as access_routes
from api.access.accounting import Accounting
from api.access.identity import Keyring
from api.access.limits import RateLimiter
from api.batch import batch_routes, file_routes
from api.batch.driver import BatchDriver
from api.core.dialect import Dialects
from api.core.error_handlers import install_error_handlers
from api.core.event_hub import EventHub
from api.core.metrics import Metrics
from api.core.runner import JobRunner
from api.core.submitter import JobSubmitter
from api.dialects import anthropic, ask, ollama, openai
from api.dialects.anthropic import routes as anthropic_routes
from api.dialects.ask import routes as ask_routes
from api.dialects.ollama import catalog as ollama_catalog
from api.dialects.ollama import models_admin as ollama_models_admin
from api.dialects.ollama import routes as ollama_routes
from api.dialects.openai import routes as openai_routes
from api.dialects.openai import tokenize as vllm_tokenize
from api.dialects.responses import routes as responses_routes
from api.edge.api_key import ApiKey
from api.edge.body_limit import BodyLimit
from api.edge.crash_guard import CrashGuard
from api.edge.host_guard import HostGuard
from api.edge.json_body import JsonBody
from api.edge.request_log import RequestLog
from api.edge.send_rate import SendRate
from api.fleet import routes as fleet_routes
from api.fleet.beat import beat_forever
from shared.redis_clients import async_command_client, command_client
from shared.settings import Settings, get_settings, without_password

log = logging.getLogger("mlxq.api")

STATIC_DIR = Path(__file__).parent / "static"
"""The web page at ``/`` (plain HTML, CSS and JavaScript; no build step)."""
MULTIPART_FRAMING_BYTES = 64 * 1024
"""Room for a file upload's multipart headers and other fields beside the file itself."""
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})

DIALECTS = Dialects([anthropic.DIALECT, openai.DIALECT, ollama.DIALECT], fallback=ask.DIALECT)
"""Who answers errors on which paths: Anthropic's /v1/messages before the rest of /v1."""
ROUTERS = (
    ask_routes.router,
    openai_routes.router,
    vllm_tokenize.router,
    responses_routes.router,
    anthropic_routes.router,
    ollama_routes.router,
    ollama_catalog.router,
    ollama_models_admin.router,
    file_routes.router,
    batch_routes.router,
    fleet_routes.router,
    access_routes.router,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    connection, sync_connection = async_command_client(settings.redis_url), app.state.redis
    hub = EventHub(settings.redis_url)
    await hub.start()
    submitter = JobSubmitter(connection, settings)
    app.state.async_redis = connection
    app.state.keyring.attach(connection)
    app.state.limiter.attach(connection)
    runner = JobRunner(
        connection, hub, submitter, settings, app.state.metrics, app.state.accounting
    )
    app.state.runner = runner
    beat = asyncio.create_task(
        beat_forever(sync_connection, settings.event_ttl, runner.instance, app.state.metrics.recent)
    )
    batches = asyncio.create_task(
        BatchDriver(connection, runner, submitter, settings).run_forever()
    )
    leases = asyncio.create_task(app.state.limiter.renew_forever())
    log.info("mlxq api: model %s, redis %s", settings.model, without_password(settings.redis_url))
    try:
        yield
    finally:
        for task in (leases, batches, beat):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.aclose()
        await hub.close()
        await connection.aclose()
        sync_connection.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="mlxq", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    # For fleet queries, metrics and the beat, run in threads (they use RQ's sync API).
    app.state.redis = command_client(settings.redis_url)
    app.state.metrics = Metrics(app.state.redis)
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    app.state.keyring = Keyring(api_key)
    app.state.limiter = RateLimiter()
    app.state.accounting = Accounting(app.state.metrics.registry)
    install_error_handlers(app, DIALECTS)
    _document_invalid_input_as_400(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    _add_edge(app, settings)
    return app


def _add_edge(app: FastAPI, settings: Settings) -> None:
    """Added innermost first: RequestLog -> CrashGuard -> (HostGuard) -> CORS -> ApiKey ->
    BodyLimit -> JsonBody -> routes."""
    app.add_middleware(JsonBody)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout,
        upload_paths=frozenset({"/v1/files"}),
        max_upload_bytes=settings.max_file_bytes + MULTIPART_FRAMING_BYTES,
        dialects=DIALECTS,
        send_rate=SendRate(settings.max_client_bytes_per_second, settings.max_body_bytes)
        if settings.max_client_bytes_per_second
        else None,
    )
    app.add_middleware(ApiKey, keyring=app.state.keyring, dialects=DIALECTS)
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
            HostGuard,
            hosts=_own_names(settings),
            origins=frozenset(settings.cors_origins),
            dialects=DIALECTS,
            keys_in_use=app.state.keyring.keys_in_use,
        )
    app.add_middleware(CrashGuard, dialects=DIALECTS)
    app.add_middleware(RequestLog, count=lambda route, status: _count(app, route, status))


def _document_invalid_input_as_400(app: FastAPI) -> None:
    """Dialects with their own error shape answer invalid input with a 400 (never FastAPI's
    422, which FastAPI documents on every route with a body): drop it from their operations."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for path, operations in schema["paths"].items():
                if DIALECTS.of(path).invalid_input_status == 400:
                    for operation in operations.values():
                        operation["responses"].pop("422", None)
            return schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _own_names(settings: Settings) -> frozenset[str]:
    """The Host names requests may carry when no API key is set."""
    names = set(LOOPBACK_NAMES) | {h.lower() for h in settings.allowed_hosts}
    if settings.host not in ("0.0.0.0", "::"):
        names.add(f"[{settings.host}]" if ":" in settings.host else settings.host.lower())
    return frozenset(names)


def _count(app: FastAPI, route: str, status: str) -> None:
    app.state.metrics.requests.labels(route=route, status=status).inc()
