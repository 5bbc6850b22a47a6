"""The API key: with MLXQ_API_KEY set, every route but the open ones needs it."""

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.dialect import Dialects
from api.edge.replies import send_error
from shared.errors import ErrorCode

OPEN_PATHS = frozenset({"/health", "/"})
"""Reachable without the API key: the liveness check (for supervisors and load balancers),
and the web page with its static files, which hold no secrets and send the key themselves."""
OPEN_PREFIXES = ("/static/",)


class ApiKey:
    """With MLXQ_API_KEY set, every route but OPEN_PATHS needs ``Authorization: Bearer <key>``
    (as OpenAI clients send it), compared in constant time."""

    def __init__(self, app: ASGIApp, key: str, dialects: Dialects) -> None:
        self.app = app
        self._dialects = dialects
        self._expected = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        if hmac.compare_digest(_given_key(scope["headers"]), self._expected):
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
