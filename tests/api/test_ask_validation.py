"""Every validation rule of POST /ask, against the API served over HTTP on a thread of this
process (no worker needed: invalid requests are refused before anything is enqueued)."""

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.support.fleet import ApiThread, settings_for

CAP = 500


@pytest.fixture(scope="module")
def api(redis_server: str) -> Iterator[str]:
    served = ApiThread(settings_for(redis_server, max_tokens_cap=CAP, queue_timeout=1)).start()
    yield served.base_url
    served.stop()


def post(api: str, body: object) -> httpx.Response:
    return httpx.post(f"{api}/ask", json=body, timeout=10)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"question": ""}, "at least 1 character"),
        ({"question": "   \n\t"}, "must not be blank"),
        ({}, "Field required"),
        ({"max_tokens": 5}, "Field required"),
        ({"question": 42}, "valid string"),
        ({"question": ["a"]}, "valid string"),
        ({"question": "hi", "max_tokens": 0}, "greater than or equal to 1"),
        ({"question": "hi", "max_tokens": -3}, "greater than or equal to 1"),
        ({"question": "hi", "max_tokens": "many"}, "valid integer"),
        ({"question": "hi", "max_tokens": 1.5}, "valid integer"),
        ({"question": "hi", "temperature": 0.5}, "Extra inputs are not permitted"),
        (["question"], "valid dictionary"),
    ],
)
def test_invalid_bodies_are_refused_with_a_reason(api: str, body: object, needle: str) -> None:
    response = post(api, body)
    assert response.status_code == 422
    assert needle in response.text


def test_invalid_json_is_refused(api: str) -> None:
    response = httpx.post(
        f"{api}/ask", content=b'{"question": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON decode error" in response.text


def test_max_tokens_above_the_cap_is_refused_with_the_limit(api: str, redis_server: str) -> None:
    response = post(api, {"question": "hi", "max_tokens": CAP + 1})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert f"limit of {CAP}" in response.json()["detail"]
    assert redis.Redis.from_url(redis_server).keys("rq:job:*") == []  # nothing was enqueued


def test_invalid_requests_are_not_enqueued(api: str, redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    post(api, {"question": ""})
    post(api, {"question": "hi", "max_tokens": 0})
    assert client.keys("rq:*") == []
