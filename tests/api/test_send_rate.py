"""One client's request bodies are bounded in bytes per second (in-process API, no worker):
past its rate a 429 ``rate_limited`` with Retry-After, before the body is parsed; another
client is not affected; file uploads are not counted. Before: three clients looping 1 MB
prompts slowed every other request 4-10x on two cores, with nothing to stop them."""

import time

import httpx
import pytest

from api.edge.send_rate import SendRate
from tests.support.app import BASE_URL, in_process_api

pytestmark = pytest.mark.anyio

RATE = 100_000
BODY = {"question": "x" * 45_000, "model": "org/nobody"}
"""Answered at once when let in (404: no worker serves that model)."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_refills_at_the_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    rate = SendRate(bytes_per_s=1000, burst_bytes=2000, clock=clock)
    assert rate.take("a", 1500) == 0
    assert rate.take("a", 1000) == pytest.approx(0.5)  # 500 left: 500 more take 0.5 s
    assert rate.take("b", 2000) == 0  # another client has its own
    clock.now += 0.5
    assert rate.take("a", 1000) == 0
    assert rate.take("a", 5000) == pytest.approx(2.0)  # over the burst: wait for a full one


async def test_a_client_over_its_rate_gets_a_429_and_another_is_served(redis_url: str) -> None:
    settings = {"max_client_bytes_per_second": RATE, "max_body_bytes": 50_000}
    async with in_process_api(redis_url, **settings) as api:
        other = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api.app, client=("127.0.0.2", 4000)),
            base_url=BASE_URL,
        )
        statuses = []
        for _ in range(3):
            response = await api.client.post("/ask", json=BODY)
            statuses.append(response.status_code)
        assert statuses == [404, 404, 429]
        assert response.json()["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        assert (await other.post("/ask", json=BODY)).status_code == 404  # let in
        await other.aclose()
        time.sleep(0.5)  # half a second refills 50 kB: room for one more body
        assert (await api.client.post("/ask", json=BODY)).status_code == 404


async def test_uploads_are_not_counted(redis_url: str) -> None:
    async with in_process_api(redis_url, max_client_bytes_per_second=RATE) as api:
        for _ in range(3):
            files = {"file": ("in.jsonl", b"x" * 90_000, "application/jsonl")}
            response = await api.client.post("/v1/files", data={"purpose": "batch"}, files=files)
            assert response.status_code == 200, response.text
