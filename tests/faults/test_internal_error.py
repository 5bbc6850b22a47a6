"""An unhandled exception in the API is a JSON 500 in the dialect's shape, and the kept-alive
connection it came on still serves the next request (uvicorn closes a connection whose
request raised; api/edge/crash_guard.py answers first). The fault is real: a worker whose
engine answers with no choice at all, which no dialect can render. The API is served by
uvicorn as ``mlxq api`` serves it, on a thread of this process, and the worker runs on
another (tests/support/fleet.py)."""

from collections.abc import Iterator

import httpx
import pytest

ENGINE = "tests.support.engines:ChoicelessEngine"


@pytest.fixture
def api(make_fleet) -> Iterator[str]:
    with make_fleet(engine=ENGINE, model="test/choiceless") as fleet:
        yield fleet.api


def _local_port(response: httpx.Response) -> int:
    """The client's end of the connection the response came on."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.mark.parametrize(
    ("path", "body", "in_its_shape"),
    [
        ("/ask", {"question": "hi"}, lambda body: body["code"] == "internal_error"),
        (
            "/api/generate",
            {"model": "test/choiceless", "prompt": "hi", "stream": False},
            lambda body: "request id" in body["error"],
        ),
        (
            "/v1/messages",
            {
                "model": "test/choiceless",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}],
            },
            lambda body: body["error"]["type"] == "api_error",
        ),
    ],
)
def test_an_internal_error_is_json_and_keeps_the_connection(api, path, body, in_its_shape) -> None:
    with httpx.Client(base_url=api, limits=httpx.Limits(max_connections=1)) as client:
        failed = client.post(path, json=body)
        assert failed.status_code == 500, failed.text
        assert failed.headers["content-type"] == "application/json"
        assert in_its_shape(failed.json()), failed.text
        assert "request id" in failed.text
        after = client.get("/v1/models")
        assert after.status_code == 200
        assert _local_port(after) == _local_port(failed)  # the same connection, still open
