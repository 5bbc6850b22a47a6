"""End to end with the real demo model: HTTP -> Redis/RQ -> worker -> MLX -> HTTP."""

import concurrent.futures
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import Processes, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(
    redis_server: str, cache_dir, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    redis.Redis.from_url(redis_server).flushdb()
    env = {
        "MLXQ_REDIS_URL": redis_server,
        "MLXQ_CACHE_DIR": str(cache_dir),
        "MLXQ_WORKER_CONCURRENCY": "8",
        "MLXQ_MAX_TOKENS_CAP": "100000",
    }
    processes = Processes(tmp_path_factory.mktemp("e2e"))
    processes.worker(env, timeout=600)  # the first run prepares the demo model
    yield processes.api(env)
    processes.stop_all()


def ask(service: str, question: str, max_tokens: int | None = None) -> httpx.Response:
    body: dict = {"question": question}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return httpx.post(f"{service}/ask", json=body, timeout=300)


def test_real_model_answers_over_http(service: str) -> None:
    response = ask(service, "What is the capital of France?", max_tokens=24)
    assert response.status_code == 200
    assert "Paris" in response.json()["answer"]


def test_eight_concurrent_requests_are_batched_by_one_worker(
    service: str, redis_server: str
) -> None:
    questions = [
        f"Name a fruit that is {c}."
        for c in ("red", "yellow", "green", "orange", "purple", "blue", "pink", "brown")
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda q: ask(service, q, max_tokens=12), questions))

    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["answer"].strip() for r in responses)
    client = redis.Redis.from_url(redis_server)
    (stats_key,) = client.keys("mlxq:worker:*:stats")
    # The worker publishes its stats with its heartbeat, once a second.
    wait_until(lambda: int(client.hget(stats_key, "peak_batch") or 0) >= 8, 5, "peak_batch 8")
    assert int(client.hget(stats_key, "peak_batch")) == 8


def test_max_tokens_that_cannot_fit_the_context_is_refused_with_the_limit(service: str) -> None:
    response = ask(service, "Hi", max_tokens=8190)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "context_length_exceeded"
    assert "context window is 8192 tokens, so max_tokens can be at most" in body["detail"]
