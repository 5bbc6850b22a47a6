"""Without an API key, only requests addressed to this server's own names (DNS rebinding)."""

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.dialect import Dialects
from api.edge.replies import send_error
from shared.errors import ErrorCode


class HostGuard:
    """Without an API key, only requests addressed to this server's own names are served:
    a web page cannot reach a loopback API through a name it rebinds to 127.0.0.1 (DNS
    rebinding), as Ollama checks since its advisory. A browser's ``Origin`` must be one of
    those names too, or a CORS origin that was allowed."""

    def __init__(
        self,
        app: ASGIApp,
        hosts: frozenset[str],
        origins: frozenset[str],
        dialects: Dialects,
        keys_in_use: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``keys_in_use``: once it says keys were made (``mlxq keys``), every request needs
        one, as with MLXQ_API_KEY, and any name is served."""
        self.app = app
        self._dialects = dialects
        self._hosts = hosts
        self._origins = origins
        self._keys_in_use = keys_in_use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self._keys_in_use and await self._keys_in_use()):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = _hostname(headers.get(b"host", b"").decode("latin-1"))
        origin = headers.get(b"origin", b"").decode("latin-1")
        if host not in self._hosts:
            why = f"Host {host!r} is not one of this server's names (MLXQ_ALLOWED_HOSTS)."
        elif origin and origin not in self._origins and _origin_host(origin) not in self._hosts:
            why = f"Origin {origin!r} may not use this server (MLXQ_CORS_ORIGINS)."
        else:
            return await self.app(scope, receive, send)
        await send_error(send, self._dialects, scope["path"], 403, ErrorCode.FORBIDDEN, why)


def _hostname(host: str) -> str:
    """``host[:port]`` or ``[v6][:port]`` without the port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_host(origin: str) -> str:
    return _hostname(origin.split("://", 1)[-1].split("/", 1)[0])
