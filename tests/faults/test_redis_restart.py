"""Redis stops: the API answers 503 within 1 s while it is down and recovers on its own;
workers reconnect without a restart; with append-only persistence, jobs queued before a
Redis restart are answered after it."""

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.helpers import ask_in_background, rq_queue
from tests.support.processes import Processes, wait_until
from tests.support.redis_server import RedisServer


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, with append-only persistence (every write synced),
    that the test stops and starts again on the same port and data directory."""
    with RedisServer(tmp_path, appendonly=True, options=("--appendfsync", "always")) as server:
        yield server


def env_for(server: RedisServer, cache_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "MLXQ_REDIS_URL": server.url,
        "MLXQ_CACHE_DIR": str(cache_dir),
        "MLXQ_ENGINE": "echo",
        **extra,
    }


def test_api_answers_503_fast_while_redis_is_down_and_recovers(
    processes: Processes, own_redis: RedisServer, cache_dir: Path
) -> None:
    env = env_for(own_redis, cache_dir)
    processes.worker(env)
    api = processes.api(env)
    body = {"question": "one two", "max_tokens": 5}
    assert httpx.post(f"{api}/ask", json=body, timeout=10).status_code == 200

    own_redis.stop()
    for _ in range(3):
        started = time.monotonic()
        response = httpx.post(f"{api}/ask", json=body, timeout=10)
        assert response.status_code == 503
        assert response.json()["code"] == "redis_unavailable"
        assert time.monotonic() - started < 1.0
    assert httpx.get(f"{api}/health").status_code == 200

    own_redis.start()

    # The same API and worker processes recover on their own (the worker backs off up to 10 s).
    def answered() -> bool:
        return httpx.post(f"{api}/ask", json=body, timeout=15).status_code == 200

    wait_until(answered, 30, "the API and the worker to recover")
    assert all(p.poll() is None for p in processes._started)


def test_jobs_queued_before_a_redis_restart_are_answered_after_it(
    processes: Processes, own_redis: RedisServer, cache_dir: Path
) -> None:
    env = env_for(own_redis, cache_dir, MLXQ_QUEUE_TIMEOUT="60")
    api = processes.api(env)
    questions = [f"question number {i}" for i in range(5)]
    with concurrent.futures.ThreadPoolExecutor(len(questions)) as pool:
        futures = [ask_in_background(pool, api, {"question": q}) for q in questions]
        wait_until(lambda: rq_queue(own_redis.url).count == len(questions), 10, "5 queued jobs")

        own_redis.stop()
        time.sleep(1)
        own_redis.start()
        assert rq_queue(own_redis.url).count == len(questions)  # the append-only file kept them
        processes.worker(env)
        answers = [f.result()[0] for f in futures]

    assert [a.status_code for a in answers] == [200] * len(questions)
    assert sorted(a.json()["answer"] for a in answers) == sorted(questions)
