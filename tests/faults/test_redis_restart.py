"""Redis stops: the API answers 503 within 1 s while it is down and recovers on its own;
workers reconnect without a restart; with append-only persistence, jobs queued before a
Redis restart are answered after it."""

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.helpers import (
    ask_in_background,
    live_worker_names,
    rq_queue,
    running_jobs,
    slow_env,
    words,
)
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


def test_requests_waiting_through_a_short_redis_restart_get_their_answers(
    processes: Processes, own_redis: RedisServer, cache_dir: Path
) -> None:
    """16 requests wait on one 4-slot worker; Redis goes away for 2 s and comes back with its
    append-only file. Before: 12 of 16 got 503 "Redis is unreachable" at about 4 s while the
    worker went on to finish all 16 (their answers thrown away). Now every one is answered."""
    env = slow_env(
        env_for(own_redis, cache_dir), MLXQ_WORKER_CONCURRENCY="4", MLXQ_QUEUE_TIMEOUT="60"
    )
    processes.worker(env)
    api = processes.api(env)
    body = {"question": "q", "max_tokens": 20}  # 2 s each: four rounds of four
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [ask_in_background(pool, api, body) for _ in range(16)]
        wait_until(lambda: rq_queue(own_redis.url).count == 12, 10, "12 queued, 4 running")
        own_redis.stop()
        time.sleep(2)
        own_redis.start()
        answers = [f.result()[0] for f in futures]
    assert [a.status_code for a in answers] == [200] * 16, [a.text for a in answers]
    assert all(a.json() == {"answer": words(20)} for a in answers)


def test_no_worker_is_judged_dead_by_beats_redis_could_not_take(
    processes: Processes, own_redis: RedisServer, cache_dir: Path
) -> None:
    """8 running requests on two workers; Redis away for 6 s (longer than a worker may be
    silent). Before: all 8 got 502 worker_lost, the reaper reading the missing heartbeats as
    two dead workers. Now the workers get a grace once Redis is back: all 8 answered."""
    env = slow_env(
        env_for(own_redis, cache_dir), MLXQ_WORKER_CONCURRENCY="4", MLXQ_QUEUE_TIMEOUT="60"
    )
    processes.worker(env)
    processes.worker(env)
    api = processes.api(env)
    body = {"question": "q", "max_tokens": 100}  # 10 s each
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [ask_in_background(pool, api, body, timeout=90) for _ in range(8)]
        names = live_worker_names(own_redis.url)

        def all_running() -> bool:
            return sum(running_jobs(own_redis.url, name) for name in names) == 8

        wait_until(all_running, 10, "8 running jobs")
        own_redis.stop()
        time.sleep(6)
        own_redis.start()
        answers = [f.result()[0] for f in futures]
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert live_worker_names(own_redis.url) == names  # neither was reaped
