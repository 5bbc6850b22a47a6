"""Model names as clients write them. Ollama users: ``ollama list`` shows ``name:latest``, and
Ollama accepts that name on its OpenAI and Anthropic endpoints too. Clients that read
``org/name`` as a provider prefix (openai-agents, litellm): the short alias, the part after
the last "/", while no other served model shares it. Every dialect takes these names and
enqueues the job for the model itself (in-process API, a heartbeating stand-in worker that
never takes the job)."""

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


@pytest.mark.parametrize("name", [f"{MODEL}:latest", "served-model", "served-model:latest"])
@pytest.mark.parametrize("path", list(REQUESTS))
async def test_every_dialect_takes_the_tag_and_the_alias(
    make_api, redis_url: str, path: str, name: str
) -> None:
    serve(redis_url, MODEL)
    async with make_api(queue_timeout=30) as api:
        body = {**REQUESTS[path], "model": name}
        request = await enqueued_request(api.client, redis_url, MODEL, path, body)
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


async def test_models_and_tags_list_each_model_and_its_alias(make_api, redis_url: str) -> None:
    serve(redis_url, MODEL)
    async with make_api(model="org/default-model") as api:
        cards = (await api.client.get("/v1/models")).json()["data"]
        tags = (await api.client.get("/api/tags")).json()["models"]
        by_alias = await api.client.get("/v1/models/served-model")
    assert [(card["id"], card["root"]) for card in cards] == [
        (MODEL, MODEL),
        ("served-model", MODEL),
    ]
    assert [tag["name"] for tag in tags] == [
        "org/default-model:latest",
        "default-model:latest",
        f"{MODEL}:latest",
        "served-model:latest",
    ]
    assert by_alias.status_code == 200
    assert by_alias.json()["id"] == "served-model" and by_alias.json()["root"] == MODEL


async def test_a_short_name_two_models_share_is_no_alias(make_api, redis_url: str) -> None:
    serve(redis_url, "a/same-name", worker="one")
    serve(redis_url, "b/same-name", worker="two")
    async with make_api() as api:
        ids = [card["id"] for card in (await api.client.get("/v1/models")).json()["data"]]
        tags = [tag["name"] for tag in (await api.client.get("/api/tags")).json()["models"]]
        chat = await api.client.post(
            "/v1/chat/completions", json={**REQUESTS["/v1/chat/completions"], "model": "same-name"}
        )
        ollama = await api.client.post(
            "/api/chat", json={**REQUESTS["/api/chat"], "model": "same-name:latest"}
        )
    assert ids == ["a/same-name", "b/same-name"]
    assert not any(tag.startswith("same-name") for tag in tags)
    assert chat.status_code == 404
    message = chat.json()["error"]["message"]
    assert "ambiguous" in message and "a/same-name" in message and "b/same-name" in message
    assert ollama.status_code == 404 and "ambiguous" in ollama.json()["error"]


async def test_an_id_that_is_another_models_short_name_keeps_it(make_api, redis_url: str) -> None:
    serve(redis_url, "served-model", worker="one")
    serve(redis_url, MODEL, worker="two")
    async with make_api(queue_timeout=30) as api:
        body = {**REQUESTS["/v1/completions"], "model": "served-model"}
        request = await enqueued_request(
            api.client, redis_url, "served-model", "/v1/completions", body
        )
        ids = [card["id"] for card in (await api.client.get("/v1/models")).json()["data"]]
    assert request["model"] == "served-model"
    assert ids == ["org/served-model", "served-model"]
