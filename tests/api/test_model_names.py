"""Model names as Ollama users write them: ``ollama list`` shows ``name:latest``, and Ollama
accepts that name on its OpenAI and Anthropic endpoints too. Every dialect takes the
``:latest`` form of a served model and enqueues the job for the model itself (in-process
API, a heartbeating stand-in worker that never takes the job)."""

import httpx
import pytest

from tests.support.jobs import enqueued_request, serve

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


@pytest.mark.parametrize("path", list(REQUESTS))
async def test_every_dialect_takes_the_latest_tag(make_api, redis_url: str, path: str) -> None:
    serve(redis_url, MODEL)
    async with make_api(queue_timeout=30) as api:
        request = await enqueued_request(api.client, redis_url, MODEL, path, REQUESTS[path])
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
