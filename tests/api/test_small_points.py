"""Issue 24's smaller points, in-process through the clients that send them: a wrong key is
told by the header it came in (Anthropic's documented requests and older SDKs send
``x-api-key``; the anthropic 2.x and openai clients a bearer token); ``stream_options``
without ``stream`` is refused as OpenAI refuses it; ``seed: -1`` asks for a random seed."""

import anthropic
import httpx
import httpx2
import openai
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.app import BASE_URL, InProcessApi
from tests.support.jobs import enqueued_request, serve


def _http(api: InProcessApi) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app))


async def test_a_wrong_key_is_told_by_the_header_it_came_in(make_api) -> None:
    async with (
        make_api(api_key="right") as api,
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=api.app)) as http2,  # anthropic's
        _http(api) as http,
    ):
        claude = anthropic.AsyncAnthropic(
            base_url=BASE_URL, api_key="wrong", http_client=http2, max_retries=0
        )
        with pytest.raises(anthropic.AuthenticationError) as by_sdk:
            await claude.messages.create(
                model=DEMO_MODEL_ID, max_tokens=1, messages=[{"role": "user", "content": "hi"}]
            )
        # Anthropic's documented request (curl, Claude Code's gateways, SDKs before 2.x).
        by_x_api_key = await api.client.post(
            "/v1/messages",
            headers={"x-api-key": "wrong", "anthropic-version": "2023-06-01"},
            json={"model": DEMO_MODEL_ID, "max_tokens": 1, "messages": []},
        )
        gpt = openai.AsyncOpenAI(
            base_url=f"{BASE_URL}/v1", api_key="wrong", http_client=http, max_retries=0
        )
        with pytest.raises(openai.AuthenticationError) as by_bearer:
            await gpt.models.list()
        missing = await api.client.get("/v1/models")
    assert "Wrong API key in the 'Authorization: Bearer' header" in by_sdk.value.message
    assert by_x_api_key.status_code == 401
    assert by_x_api_key.json()["error"]["message"].startswith(
        "Wrong API key in the 'x-api-key' header"
    )
    assert "Wrong API key in the 'Authorization: Bearer' header" in by_bearer.value.message
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("Missing API key: send ")


async def test_stream_options_without_stream_is_refused(make_api) -> None:
    async with make_api() as api, _http(api) as http:
        client = openai.AsyncOpenAI(
            base_url=f"{BASE_URL}/v1", api_key="unused", http_client=http, max_retries=0
        )
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model=DEMO_MODEL_ID,
                messages=[{"role": "user", "content": "hi"}],
                stream_options={"include_usage": True},
            )
    assert "stream_options is only allowed when stream is true" in raised.value.message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize(("seed", "sent"), [(-1, None), (7, 7)])
async def test_seed_minus_one_is_a_random_seed(
    api_client: httpx.AsyncClient, redis_url: str, path: str, seed: int, sent: int | None
) -> None:
    serve(redis_url, DEMO_MODEL_ID)
    body: dict = {"model": DEMO_MODEL_ID, "seed": seed, "max_tokens": 2}
    if "chat" in path:
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    request = await enqueued_request(api_client, redis_url, DEMO_MODEL_ID, path, body)
    assert request["sampling"]["seed"] == sent  # None: each request draws its own
    below = await api_client.post(path, json={**body, "seed": -2})
    assert below.status_code == 400 and below.json()["error"]["param"] == "seed"
