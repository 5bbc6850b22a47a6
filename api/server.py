"""``mlxq api``: serve the app with uvicorn, behind the edge's own HTTP limits, after refusing
an unsafe configuration."""

import ipaddress
import logging
import sys

import uvicorn

from api.edge.http_protocol import guarded_protocol, raise_open_file_limit
from api.main import create_app
from shared.settings import Settings, get_settings


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
