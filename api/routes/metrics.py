"""``GET /metrics``: Prometheus text format."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    body = await asyncio.to_thread(generate_latest, registry)  # reads Redis: not on the loop
    return Response(body, media_type=CONTENT_TYPE_LATEST)
