"""The API key: with MLXQ_API_KEY set, or any key made (``mlxq keys create``), every route
but the open ones needs one; the caller's identity is resolved here, once (api/access/)."""

from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.access.identity import Keyring
from api.core.dialect import Dialects
from api.edge.replies import send_error
from shared.errors import ErrorCode

OPEN_PATHS = frozenset({"/health", "/"})
"""Reachable without the API key: the liveness check (for supervisors and load balancers),
and the web page with its static files, which hold no secrets and send the key themselves."""
OPEN_PREFIXES = ("/static/",)


class ApiKey:
    """While keys are in use, every route but OPEN_PATHS needs ``Authorization: Bearer <key>``
    (as OpenAI clients send it; MLXQ_API_KEY is compared in constant time). The caller's
    ``Identity`` goes on the request's scope state (``identity``) and its key's name in the
    request's log line (``key``), never the secret."""

    def __init__(self, app: ASGIApp, keyring: Keyring, dialects: Dialects) -> None:
        self.app = app
        self._dialects = dialects
        self._keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        try:
            identity = await self._keyring.identify(_given_key(scope["headers"]))
        except RedisError as exc:
            message = f"Redis is unreachable, so the API key cannot be checked: {exc}"
            code = ErrorCode.REDIS_UNAVAILABLE
            return await send_error(send, self._dialects, path, 503, code, message)
        if identity is not None:
            state = scope.setdefault("state", {})
            state["identity"], state["key"] = identity, identity.name
            return await self.app(scope, receive, send)
        await send_error(
            send,
            self._dialects,
            scope["path"],
            401,
            ErrorCode.UNAUTHORIZED,
            unauthorized_message(scope["headers"]),
            [(b"www-authenticate", b"Bearer")],
        )


def unauthorized_message(headers: list[tuple[bytes, bytes]]) -> str:
    """Why a request was refused, naming the header its key came in: a client may send one
    the user did not expect (Anthropic's documented requests send ``x-api-key``; the
    anthropic 2.x and openai clients a bearer token)."""
    fields = dict(headers)
    scheme = fields.get(b"authorization", b"").strip().partition(b" ")[0]
    if scheme.lower() == b"bearer":
        return (
            "Wrong API key in the 'Authorization: Bearer' header; send the key the server was "
            "given (MLXQ_API_KEY)."
        )
    if fields.get(b"x-api-key", b"").strip():
        return (
            "Wrong API key in the 'x-api-key' header; send the key the server was given "
            "(MLXQ_API_KEY)."
        )
    return (
        "Missing API key: send 'Authorization: Bearer <MLXQ_API_KEY>' (or 'x-api-key: "
        "<MLXQ_API_KEY>', as Anthropic's documented requests do)."
    )


def _given_key(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The key a client sent: ``Authorization: Bearer <key>`` (the scheme in any case, as
    HTTP says) or Anthropic's ``x-api-key: <key>``."""
    fields = dict(headers)
    scheme, _, token = fields.get(b"authorization", b"").strip().partition(b" ")
    if scheme.lower() == b"bearer":
        return token.strip()
    return fields.get(b"x-api-key", b"").strip()
