"""An unhandled exception anywhere below the edge: a JSON 500 in the path's dialect, and the
connection kept.

Starlette's last resort (``ServerErrorMiddleware``) answers an unhandled exception with a
plain-text 500 and then raises it on to the server; uvicorn, seeing an exception after the
response began, closes the connection, so a client's next request on that kept-alive
connection is reset. This middleware catches the exception first: it logs the traceback
(with the request's id) and answers the dialect's own error body, status 500, code
``internal_error``, and the server sees a request that ended normally.

A response that had already started (a stream) cannot be turned into an error any more:
the exception goes on to the server, which closes the connection, the only way left to tell
the client that the body it got is incomplete. Streams send their own errors as their last
frame (api/core/frames.py), so this is for bugs in that path alone.
"""

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.dialect import Dialects
from api.edge.replies import send_error
from shared.errors import ErrorCode

log = logging.getLogger("mlxq.api")


class CrashGuard:
    def __init__(self, app: ASGIApp, dialects: Dialects) -> None:
        self.app = app
        self._dialects = dialects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch_start(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch_start)
        except Exception:
            request_id = scope.get("state", {}).get("request_id", "-")
            log.exception("request %s: unhandled error in %s", request_id, scope["path"])
            if started:
                raise
            message = f"Internal server error (request id {request_id}); the server logged it."
            await send_error(
                send, self._dialects, scope["path"], 500, ErrorCode.INTERNAL_ERROR, message
            )
