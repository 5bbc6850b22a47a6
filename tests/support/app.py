"""The API app in the test's own process: ``create_app`` on a real Redis, inside its lifespan
(event hub, job runner, reaper), driven through httpx's ASGI transport. No socket, no
process, no worker: a request answers in milliseconds unless it waits for a worker."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from api.main import create_app
from shared.settings import Settings

BASE_URL = "http://127.0.0.1"  # a name the API answers to without a key (HostGuard)


@dataclass
class InProcessApi:
    app: FastAPI
    settings: Settings
    client: httpx.AsyncClient


@asynccontextmanager
async def in_process_api(redis_url: str, **settings: Any) -> AsyncIterator[InProcessApi]:
    """``settings``: Settings fields besides ``redis_url`` (e.g. api_key="k", queue_timeout=0.5)."""
    config = Settings(redis_url=redis_url, **settings)
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client,
    ):
        yield InProcessApi(app, config, client)
