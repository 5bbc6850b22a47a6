"""Every 503 says when to come back (``Retry-After``), as the official clients read it: the
``openai`` client backs off by it, Ollama's and Anthropic's too."""

from pathlib import Path

import httpx
import openai
import pytest

from api.edge.replies import send_error
from api.main import DIALECTS
from shared.settings import DEMO_MODEL_ID
from tests.support.app import BASE_URL, in_process_api
from tests.support.redis_server import RedisServer


async def test_no_worker_is_a_503_with_retry_after(make_api) -> None:
    async with make_api(queue_timeout=0.3) as api:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app))
        client = openai.AsyncOpenAI(
            base_url=f"{BASE_URL}/v1", api_key="unused", http_client=http, max_retries=0
        )
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(
                model=DEMO_MODEL_ID, messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
        ready = await api.client.get("/ready")
    assert raised.value.status_code == 503
    assert raised.value.response.headers["retry-after"] == "5"
    assert ready.status_code == 503 and ready.headers["retry-after"] == "5"


async def test_redis_unreachable_is_a_503_with_retry_after(anyio_backend, tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        async with in_process_api(server.url) as api:
            server.stop()
            models = await api.client.get("/v1/models")
            tags = await api.client.get("/api/tags")
    assert models.status_code == 503 and models.json()["error"]["code"] == "redis_unavailable"
    assert models.headers["retry-after"] == "2"
    assert tags.status_code == 503 and tags.headers["retry-after"] == "2"


async def test_a_503_from_the_edge_says_when_to_come_back(anyio_backend) -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await send_error(send, DIALECTS, "/v1/models", 503, "overloaded", "busy")
    assert (b"retry-after", b"1") in sent[0]["headers"]
    await send_error(send, DIALECTS, "/api/tags", 503, "redis_unavailable", "down")
    assert (b"retry-after", b"2") in sent[2]["headers"]
