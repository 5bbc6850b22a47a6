"""A JSON schema too deep to enforce is refused with a message that says so, in every dialect
(in-process API, no worker). Before: a schema nested 90 deep was refused by the worker as
"4991: JSON decode error", a grammar engine's parser message."""

import httpx
import pytest

from api.core.validators import MAX_SCHEMA_DEPTH, json_depth
from shared.settings import DEMO_MODEL_ID

pytestmark = pytest.mark.anyio


def nested(objects: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(objects):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


DEEP = nested(90)
USER = [{"role": "user", "content": "hi"}]


def test_depth_counts_objects_and_arrays() -> None:
    assert json_depth("x") == 0
    assert json_depth({"a": [1, {"b": {}}]}) == 4
    assert json_depth(nested(2)) == 5  # each level: the object and its properties


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/v1/chat/completions",
            {
                "model": DEMO_MODEL_ID,
                "messages": USER,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "deep", "schema": DEEP},
                },
            },
            lambda r: r.json()["error"]["message"],
        ),
        (
            "/api/chat",
            {"model": DEMO_MODEL_ID, "messages": USER, "format": DEEP, "stream": False},
            lambda r: r.json()["error"],
        ),
        (
            "/v1/messages",
            {
                "model": DEMO_MODEL_ID,
                "max_tokens": 8,
                "messages": USER,
                "tools": [{"name": "f", "input_schema": DEEP}],
            },
            lambda r: r.json()["error"]["message"],
        ),
    ],
)
async def test_a_too_deep_schema_is_a_400_that_says_why(
    api_client: httpx.AsyncClient, path: str, body: dict, message
) -> None:
    response = await api_client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert f"at most {MAX_SCHEMA_DEPTH} can be enforced" in message(response)
    assert "levels deep" in message(response)


async def test_a_deep_but_enforceable_schema_is_accepted(api_client: httpx.AsyncClient) -> None:
    body = {
        "model": DEMO_MODEL_ID,
        "messages": USER,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "ok", "schema": nested(40)},
        },
    }
    response = await api_client.post("/v1/chat/completions", json=body)
    assert response.json()["error"]["code"] == "no_worker"  # queued, not refused
