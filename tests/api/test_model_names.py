"""Model names as Ollama users write them: ``ollama list`` shows ``name:latest``, and Ollama
accepts that name on its OpenAI and Anthropic endpoints too. Every dialect takes the
``:latest`` form of a served model and enqueues the job for the model itself (in-process
API, a heartbeating stand-in worker that never takes the job)."""

import asyncio
import contextlib
import json
import zlib

import httpx
import pytest
import redis

from shared import protocol
from shared.keys import queue_name_for_model
from shared.rq_bridge import queue_key

pytestmark = pytest.mark.anyio

MODEL = "org/served-model"

REQUESTS = {
    "/ask": {"question": "hi", "model": f"{MODEL}:latest"},
    "/v1/chat/completions": {
        "model": f"{MODEL}:latest",
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/v1/completions": {"model": f"{MODEL}:latest", "prompt": "hi"},
    "/v1/responses": {"model": f"{MODEL}:latest", "input": "hi"},
    "/v1/messages": {
        "model": f"{MODEL}:latest",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    },
    "/api/chat": {
        "model": f"{MODEL}:latest",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": False,
    },
    "/api/generate": {"model": f"{MODEL}:latest", "prompt": "hi", "stream": False},
    "/v1/embeddings": {"model": f"{MODEL}:latest", "input": "hi"},
    "/api/embed": {"model": f"{MODEL}:latest", "input": "hi"},
}


def serve(redis_url: str, model: str) -> None:
    """A live worker for ``model`` as the fleet sees it (a heartbeat), taking no job."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline() as pipeline:
        stats = protocol.WorkerStats(model=model, queues=[queue_name_for_model(model)], slots=2)
        protocol.add_heartbeat(pipeline, "stand-in", stats, ttl_s=60, running=[])
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


@pytest.mark.parametrize("path", list(REQUESTS))
async def test_every_dialect_takes_the_latest_tag(make_api, redis_url: str, path: str) -> None:
    serve(redis_url, MODEL)
    async with make_api(queue_timeout=30) as api:
        sent = asyncio.create_task(api.client.post(path, json=REQUESTS[path]))
        request = await queued_job(redis_url, MODEL)
        assert not sent.done(), sent.result().text  # waiting for a worker, not refused
        sent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sent
    assert request["model"] == MODEL


async def test_an_unserved_name_with_the_tag_is_still_a_404(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/v1/messages",
        json={**REQUESTS["/v1/messages"], "model": "org/nobody:latest"},
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found_error"
    assert "org/nobody:latest" in response.json()["error"]["message"]


async def test_models_retrieves_the_tagged_name(make_api, redis_url: str) -> None:
    serve(redis_url, MODEL)
    async with make_api() as api:
        response = await api.client.get(f"/v1/models/{MODEL}:latest")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == f"{MODEL}:latest"
