"""Every request body is read as JSON, whatever its ``Content-Type`` says, as Ollama and OpenAI
read theirs; multipart forms (file uploads, ``/v1/files``) stay forms.

Clients send JSON under other types: ``curl -d`` (as Ollama's own docs write it) sends
``application/x-www-form-urlencoded``, litellm's ``ollama/`` and ``ollama_chat/`` providers
send no type at all. FastAPI decides by the type whether to parse a body as JSON (and, with
its default ``strict_content_type``, does not parse one without a type), so such a body
reached the routes as bytes and failed validation ("Input should be a valid dictionary").
Rewriting the header here, once, keeps every route an ordinary FastAPI body model (with its
OpenAPI schema), where a route-level dependency reading raw bytes would have to be repeated
on each route and would hide the body's schema.

FastAPI's strictness guards a local API against a web page's "simple" cross-site POST
(``text/plain`` needs no CORS preflight). Here that guard is elsewhere in the edge: without
an API key, a request from another site's page (its ``Origin``) is a 403 (host_guard.py);
with one, a page cannot attach the key without a preflight (api_key.py).
"""

from starlette.types import ASGIApp, Receive, Scope, Send

JSON = b"application/json"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class JsonBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _WITH_BODY:
            headers = scope["headers"]
            declared = next((value for name, value in headers if name == b"content-type"), b"")
            if not _kept(declared):
                kept = [(name, value) for name, value in headers if name != b"content-type"]
                scope = {**scope, "headers": [*kept, (b"content-type", JSON)]}
        await self.app(scope, receive, send)


def _kept(content_type: bytes) -> bool:
    """JSON already (``application/json``, ``application/*+json``), or a multipart form."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == JSON or media.endswith(b"+json") or media.startswith(b"multipart/")
