"""A worker killed with SIGKILL mid-generation: noticed within 10 s, its jobs retried once on
another live worker or failed clearly; clients never hang; RQ's started registry is emptied.
The same for an embedding worker's jobs."""

import concurrent.futures
import signal
import time

import httpx
import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import Worker

from shared.keys import queue_name_for_model
from shared.settings import DEMO_EMBEDDING_MODEL_ID
from tests.faults.helpers import (
    ask_in_background,
    live_worker_names,
    rq_queue,
    running_jobs,
    slow_env,
    words,
)
from tests.support.processes import Processes, wait_until

DETECTION_LIMIT_S = 10.0


def start_busy_worker(processes: Processes, env: dict[str, str], jobs: int, api: str, pool):
    """One worker running ``jobs`` 4-second jobs; returns it, its name and the futures."""
    worker = processes.worker(env)
    (name,) = live_worker_names(env["MLXQ_REDIS_URL"])
    futures = [
        ask_in_background(pool, api, {"question": "q", "max_tokens": 40}) for _ in range(jobs)
    ]
    wait_until(lambda: running_jobs(env["MLXQ_REDIS_URL"], name) == jobs, 10, "jobs to start")
    return worker, name, futures


def test_jobs_of_a_killed_worker_are_answered_by_another(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env)
    api = processes.api(env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        doomed, _, futures = start_busy_worker(processes, env, 3, api, pool)
        processes.worker(env)
        time.sleep(0.5)  # the jobs are mid-generation
        killed_at = time.monotonic()
        doomed.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]

    for response, answered_at in results:
        assert response.status_code == 200, response.text
        assert response.json() == {"answer": words(40)}  # a whole answer, generated again
        # detection (<= 10 s) plus a fresh 4 s generation
        assert answered_at - killed_at < DETECTION_LIMIT_S + 4 * 1.5
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    # RQ's records follow the answers (the worker ends a job in RQ after publishing it)
    wait_until(lambda: queue.finished_job_registry.count == 3, 5, "RQ to record 3 finished jobs")
    wait_until(lambda: queue.started_job_registry.count == 0, 5, "RQ's started registry to empty")


def test_jobs_of_a_killed_worker_fail_clearly_when_no_other_worker_serves(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env)
    api = processes.api(env)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        doomed, name, futures = start_busy_worker(processes, env, 2, api, pool)
        killed_at = time.monotonic()
        doomed.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]

    for response, answered_at in results:
        assert response.status_code == 502
        assert response.json()["code"] == "worker_lost"
        assert "stopped responding" in response.json()["detail"]
        assert "no other live worker serves" in response.json()["detail"]
        assert answered_at - killed_at < DETECTION_LIMIT_S
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    assert queue.started_job_registry.count == 0
    assert queue.failed_job_registry.count == 2
    assert name not in live_worker_names(env["MLXQ_REDIS_URL"])


def test_a_stream_cut_off_by_a_killed_worker_ends_with_an_error_event(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env)
    api = processes.api(env)
    doomed = processes.worker(env)
    body = {"question": "q", "max_tokens": 200, "stream": True}
    with httpx.stream("POST", f"{api}/ask", json=body, timeout=30) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        processes.worker(env)  # a live worker exists, but a half-sent stream must not restart
        doomed.send_signal(signal.SIGKILL)
        rest = list(lines)
    assert first == "data: w0"
    assert not any(line.startswith("event: done") for line in rest)
    assert "event: error" in rest
    error = rest[rest.index("event: error") + 1]
    assert '"code":"worker_lost"' in error and "already streamed" in error


# -- embedding workers: their jobs are recovered like generation jobs ------------------------

EMBEDDING_JOBS = 6


def embedding_env(base: dict[str, str]) -> dict[str, str]:
    """Embedding workers whose (test) engine answers each job 4 s after it arrives."""
    return {
        **base,
        "MLXQ_MODEL": DEMO_EMBEDDING_MODEL_ID,
        "MLXQ_ENGINE": "tests.support.engines:SlowEmbeddingEngine",
        "MLXQ_TEST_EMBED_S": "4",
    }


def embed_in_background(pool: concurrent.futures.Executor, api: str) -> concurrent.futures.Future:
    def embed() -> tuple[httpx.Response, float]:
        body = {"model": DEMO_EMBEDDING_MODEL_ID, "input": ["first text", "second text"]}
        response = httpx.post(f"{api}/v1/embeddings", json=body, timeout=30)
        return response, time.monotonic()

    return pool.submit(embed)


def start_busy_embedding_worker(processes: Processes, env: dict[str, str], api: str, pool):
    """One embedding worker running EMBEDDING_JOBS jobs; returns it, its name and the futures."""
    worker = processes.worker(env)
    (name,) = live_worker_names(env["MLXQ_REDIS_URL"])
    futures = [embed_in_background(pool, api) for _ in range(EMBEDDING_JOBS)]
    wait_until(
        lambda: running_jobs(env["MLXQ_REDIS_URL"], name) == EMBEDDING_JOBS, 10, "jobs to start"
    )
    return worker, name, futures


def embedding_queue(redis_url: str) -> Queue:
    connection = redis.Redis.from_url(redis_url)
    name = queue_name_for_model(DEMO_EMBEDDING_MODEL_ID)
    return Queue(name, connection=connection, serializer=JSONSerializer)


def test_embedding_jobs_of_a_killed_worker_are_answered_by_another(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """Issue 18: the reaper read every job as a generation request, failed on the first
    embedding job, and left the other clients waiting for their own timeout."""
    env = embedding_env(mlxq_env)
    api = processes.api(mlxq_env)
    with concurrent.futures.ThreadPoolExecutor(EMBEDDING_JOBS) as pool:
        doomed, name, futures = start_busy_embedding_worker(processes, env, api, pool)
        processes.worker(env)
        killed_at = time.monotonic()
        doomed.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]

    for response, answered_at in results:
        assert response.status_code == 200, response.text
        assert [d["embedding"] for d in response.json()["data"]] == [[1.0, 0.0, 0.0]] * 2
        assert answered_at - killed_at < DETECTION_LIMIT_S + 4 * 1.5  # detection + a fresh job
    redis_url = env["MLXQ_REDIS_URL"]
    queue = embedding_queue(redis_url)
    wait_until(lambda: queue.started_job_registry.count == 0, 5, "RQ's started registry to empty")
    assert queue.finished_job_registry.count == EMBEDDING_JOBS
    assert name not in live_worker_names(redis_url)
    rq_workers = Worker.all(connection=redis.Redis.from_url(redis_url))
    assert name not in {w.name for w in rq_workers}  # RQ no longer lists the dead worker


def test_embedding_jobs_of_a_killed_worker_fail_promptly_when_it_was_alone(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = embedding_env(mlxq_env)
    api = processes.api(mlxq_env)
    with concurrent.futures.ThreadPoolExecutor(EMBEDDING_JOBS) as pool:
        doomed, name, futures = start_busy_embedding_worker(processes, env, api, pool)
        killed_at = time.monotonic()
        doomed.send_signal(signal.SIGKILL)
        results = [f.result() for f in futures]

    for response, answered_at in results:
        assert response.status_code == 502, response.text
        error = response.json()["error"]
        assert error["code"] == "worker_lost"
        assert "no other live worker serves" in error["message"]
        assert answered_at - killed_at < DETECTION_LIMIT_S
    queue = embedding_queue(env["MLXQ_REDIS_URL"])
    assert queue.started_job_registry.count == 0
    assert queue.failed_job_registry.count == EMBEDDING_JOBS
    assert name not in live_worker_names(env["MLXQ_REDIS_URL"])
