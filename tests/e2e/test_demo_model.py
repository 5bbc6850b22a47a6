"""End to end with the real demo model: HTTP -> Redis/RQ -> worker -> MLX -> HTTP."""

import concurrent.futures

import httpx
import pytest
import redis

from tests.support.processes import Service, wait_until

pytestmark = pytest.mark.e2e


def ask(service: Service, question: str, max_tokens: int | None = None) -> httpx.Response:
    body: dict = {"question": question}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return httpx.post(f"{service.base_url}/ask", json=body, timeout=300)


def test_real_model_answers_over_http(model_service: Service) -> None:
    response = ask(model_service, "What is the capital of France?", max_tokens=24)
    assert response.status_code == 200
    assert "Paris" in response.json()["answer"]


def test_eight_concurrent_requests_are_batched_by_one_worker(model_service: Service) -> None:
    questions = [
        f"Name a fruit that is {c}."
        for c in ("red", "yellow", "green", "orange", "purple", "blue", "pink", "brown")
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda q: ask(model_service, q, max_tokens=12), questions))

    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["answer"].strip() for r in responses)
    client = redis.Redis.from_url(model_service.redis_url)
    (stats_key,) = client.keys("mlxq:worker:*:stats")
    # The worker publishes its stats with its heartbeat, once a second.
    wait_until(lambda: int(client.hget(stats_key, "peak_batch") or 0) >= 8, 5, "peak_batch 8")
    assert int(client.hget(stats_key, "peak_batch")) == 8


def test_max_tokens_that_cannot_fit_the_context_is_refused_with_the_limit(
    model_service: Service,
) -> None:
    response = ask(model_service, "Hi", max_tokens=8190)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "context_length_exceeded"
    assert "context window is 8192 tokens, so max_tokens can be at most" in body["detail"]
