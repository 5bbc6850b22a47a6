"""``mlxq api``: serve the app with uvicorn, behind the edge's own HTTP limits, after refusing
an unsafe configuration."""

import contextlib
import ipaddress
import logging
import sys

import redis
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from api.edge.connections import (
    PER_CLIENT_SHARE,
    ConnectionBudget,
    ConnectionMetrics,
    default_max_connections,
)
from api.edge.http_protocol import guarded_protocol, raise_open_file_limit
from api.main import create_app
from shared.api_keys import keys_made
from shared.redis_clients import command_client
from shared.settings import Settings, get_settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> str | None:
    """Why the API must not start as configured (unless keys were made: ``run``), or None."""
    if _is_loopback(settings.host) or settings.api_key is not None or settings.allow_insecure:
        return None
    return (
        f"refusing to listen on {settings.host} without an API key: anyone who can reach it "
        "could use the model. Set MLXQ_API_KEY or make keys (mlxq keys create), or "
        "MLXQ_ALLOW_INSECURE=true if the network is already closed to others."
    )


def _keys_made(settings: Settings) -> bool:
    """Whether keys exist in Redis (``mlxq keys create``): then every request needs one, as
    with MLXQ_API_KEY, and the API may listen anywhere; an API process that has seen keys
    stays closed (api/access/identity.py). False when Redis cannot say: the stricter answer."""
    try:
        return keys_made(command_client(settings.redis_url))
    except redis.RedisError:
        return False


def connection_budget(settings: Settings, open_file_limit: int) -> ConnectionBudget:
    """The connections this process may hold: MLXQ_MAX_CONNECTIONS, or what its open-file
    limit allows; per client a quarter of that unless set."""
    total = settings.max_connections or default_max_connections(open_file_limit)
    per_client = settings.max_connections_per_client or max(1, total // PER_CLIENT_SHARE)
    return ConnectionBudget(total, per_client)


def build_server(settings: Settings) -> uvicorn.Server:
    """``create_app(settings)`` in uvicorn, behind the edge's own HTTP limits, as ``mlxq api``
    serves it (the in-process tests serve it the same way, on a thread)."""
    budget = connection_budget(settings, raise_open_file_limit())
    app = create_app(settings)
    app.state.metrics.registry.register(ConnectionMetrics(budget))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout, budget),
        timeout_keep_alive=int(max(1, settings.keepalive_timeout)),
        limit_concurrency=None,  # the budget decides, in mlxq's error shape (connections.py)
        log_level=settings.log_level.lower(),
        access_log=False,  # RequestLog logs each request with its id and timing
    )
    return uvicorn.Server(config)


def run() -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = check_exposure(settings)
    if problem is not None and _keys_made(settings):
        problem = None
    if problem is not None:
        print(f"mlxq api: {problem}", file=sys.stderr)
        return 2
    server = build_server(settings)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has already shut down
        server.run()
    return 0 if server.started else STARTUP_FAILURE
