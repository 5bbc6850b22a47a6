"""A JSON body is read as JSON whatever its Content-Type says (api/edge/json_body.py), as
Ollama and OpenAI read theirs: ``curl -d`` sends ``application/x-www-form-urlencoded``,
litellm's Ollama providers send no type. Multipart uploads stay forms. In-process API; the
job routes with a stand-in worker that never takes the job."""

import json

import httpx
import pytest

from tests.support.jobs import enqueued_request, serve

pytestmark = pytest.mark.anyio

MODEL = "org/served-model"
USER = [{"role": "user", "content": "hi"}]
JOBS = {
    "/ask": {"question": "hi", "model": MODEL},
    "/v1/chat/completions": {"model": MODEL, "messages": USER},
    "/v1/completions": {"model": MODEL, "prompt": "hi"},
    "/v1/responses": {"model": MODEL, "input": "hi"},
    "/v1/messages": {"model": MODEL, "max_tokens": 8, "messages": USER},
    "/api/chat": {"model": MODEL, "messages": USER, "stream": False},
    "/api/generate": {"model": MODEL, "prompt": "hi", "stream": False},
    "/v1/embeddings": {"model": MODEL, "input": "hi"},
    "/api/embed": {"model": MODEL, "input": "hi"},
}
SENT_AS = {
    "no type (litellm's ollama/ and ollama_chat/)": {},
    "curl -d": {"content-type": "application/x-www-form-urlencoded"},
    "text/plain": {"content-type": "text/plain; charset=utf-8"},
}


@pytest.mark.parametrize("headers", list(SENT_AS.values()), ids=list(SENT_AS))
@pytest.mark.parametrize("path", list(JOBS))
async def test_every_job_route_reads_json_under_any_type(
    make_api, redis_url: str, path: str, headers: dict
) -> None:
    serve(redis_url, MODEL)
    content = json.dumps(JOBS[path]).encode()
    async with make_api(queue_timeout=30) as api:
        request = await enqueued_request(
            api.client, redis_url, MODEL, path, content=content, headers=headers
        )
    assert request["model"] == MODEL


async def test_every_json_route_reads_json_without_a_type(api_client: httpx.AsyncClient) -> None:
    """Every route whose body is JSON, from the OpenAPI schema: an empty object sent without
    a type is read as an object (its error names a missing field, not the whole body)."""
    schema = (await api_client.get("/openapi.json")).json()
    routes = [
        path
        for path, operations in schema["paths"].items()
        if "application/json"
        in operations.get("post", {}).get("requestBody", {}).get("content", {})
    ]
    assert len(routes) >= 12, routes
    for path in routes:
        response = await api_client.post(path, content=b"{}")
        assert "valid dictionary" not in response.text, (path, response.text)
        assert response.status_code in (400, 422), (path, response.text)


async def test_a_body_that_is_not_json_says_so(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/v1/chat/completions",
        content=b"model=m&messages=hi",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


async def test_file_uploads_stay_multipart(api_client: httpx.AsyncClient) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}
    upload = await api_client.post(
        "/v1/files",
        files={"file": ("in.jsonl", json.dumps(line).encode())},
        data={"purpose": "batch"},
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["filename"] == "in.jsonl"


async def test_a_foreign_page_still_cannot_post_plain_text(api_client: httpx.AsyncClient) -> None:
    """A text/plain POST needs no CORS preflight: the host guard refuses a foreign Origin."""
    response = await api_client.post(
        "/api/generate",
        content=json.dumps(JOBS["/api/generate"]).encode(),
        headers={"content-type": "text/plain", "origin": "http://attacker.example"},
    )
    assert response.status_code == 403
