"""A worker killed with SIGKILL mid-generation: noticed within 10 s, its jobs retried once on
another live worker or failed clearly; clients never hang; RQ's started registry is emptied."""

import concurrent.futures
import signal
import time

import httpx

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
