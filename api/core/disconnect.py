"""Stopping work for clients that went away."""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")

CANCEL_GRACE_S = 5.0
"""How long a request whose client left keeps cancelling its work before it gives up."""
CANCEL_RETRY_S = 0.05
CLIENT_CLOSED_REQUEST = 499
"""Status logged for a request whose client left before its answer (nginx's convention)."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | Response:
    """Await ``work``, but cancel it when the client disconnects first (a non-streaming
    request: nothing else would notice). The cancelled job is dropped or stopped."""
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if job.done():
        return job.result()
    # A cancellation can be swallowed below (redis-py's pipelines and pub/sub catch it at
    # times), so it is repeated until the work is gone: its clean-up takes the job back.
    job.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen, not lost
    give_up_at = asyncio.get_running_loop().time() + CANCEL_GRACE_S
    while not job.done() and asyncio.get_running_loop().time() < give_up_at:
        job.cancel()
        await asyncio.wait({job}, timeout=CANCEL_RETRY_S)
    return Response(status_code=CLIENT_CLOSED_REQUEST)
