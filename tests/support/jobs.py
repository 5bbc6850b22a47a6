"""What an in-process API enqueued: a stand-in worker that heartbeats (so the fleet serves its
model) but takes no job, and the request of the job waiting in a model's queue."""

import asyncio
import contextlib
import json
import zlib
from typing import Any

import httpx
import redis

from shared import protocol
from shared.keys import queue_name_for_model
from shared.rq_bridge import queue_key


def serve(redis_url: str, model: str, worker: str = "stand-in") -> None:
    """A live worker for ``model`` as the fleet sees it (a heartbeat), taking no job."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline() as pipeline:
        stats = protocol.WorkerStats(model=model, queues=[queue_name_for_model(model)], slots=2)
        protocol.add_heartbeat(pipeline, worker, stats, ttl_s=60, running=[])
        pipeline.execute()


async def queued_job(redis_url: str, model: str) -> dict:
    """The request of the one job waiting in ``model``'s queue, once it is there."""
    client = redis.Redis.from_url(redis_url)
    key = queue_key(queue_name_for_model(model))
    for _ in range(200):
        ids = client.lrange(key, 0, -1)
        if ids:
            (job_id,) = ids
            data = client.hget(f"rq:job:{job_id.decode()}", "data")
            assert data is not None
            _, _, _, kwargs = json.loads(zlib.decompress(data))
            return kwargs["request"]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no job was enqueued for {model}")


async def enqueued_request(
    client: httpx.AsyncClient, redis_url: str, model: str, path: str, body: Any = None, **post: Any
) -> dict:
    """POST ``body`` as JSON (or what ``post`` gives httpx: ``content=``, ``headers=``) and
    return the job request it enqueued for ``model`` (the request must wait for a worker, not
    be refused); the waiting request is then cancelled."""
    if body is not None:
        post["json"] = body
    sent = asyncio.create_task(client.post(path, **post))
    try:
        request = await queued_job(redis_url, model)
    except AssertionError:
        if sent.done():
            raise AssertionError(f"refused: {sent.result().text}") from None
        raise
    assert not sent.done(), sent.result().text  # waiting for a worker, not refused
    sent.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sent
    return request
