"""Deadlines: a request may carry a timeout (the server has a default); a job whose deadline
passed is never started, and the client gets a 504 with a clear message."""

import concurrent.futures
import time

import httpx

from tests.faults.helpers import ask_in_background, rq_queue, slow_env
from tests.support.processes import Processes, wait_until


def test_job_whose_deadline_passes_in_the_queue_is_never_started(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="1")
    processes.worker(env)
    api = processes.api(env)
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = ask_in_background(pool, api, {"question": "q", "max_tokens": 30})  # 3 s
        wait_until(lambda: queue.started_job_registry.count == 1, 5, "the first job to start")
        started = time.monotonic()
        late = httpx.post(f"{api}/ask", json={"question": "q", "timeout": 1}, timeout=10)
        waited = time.monotonic() - started
        assert busy.result()[0].status_code == 200

    assert late.status_code == 504
    assert late.json() == {
        "detail": "The request's deadline passed while it waited in the queue.",
        "code": "timeout",
    }
    assert 0.9 < waited < 2
    time.sleep(0.5)
    assert queue.finished_job_registry.count == 1  # the late job never ran


def test_generation_stops_at_the_deadline(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = slow_env(mlxq_env)
    processes.worker(env)
    api = processes.api(env)
    started = time.monotonic()
    response = httpx.post(
        f"{api}/ask", json={"question": "q", "max_tokens": 300, "timeout": 1.5}, timeout=10
    )
    assert response.status_code == 504
    assert response.json()["detail"] == "The request's time limit passed while generating."
    assert time.monotonic() - started < 2.5
    # what was generated comes with the 504 (about 1.5 s of 0.1 s words), not thrown away
    partial = response.json()["partial_answer"].split()
    assert partial[:3] == ["w0", "w1", "w2"] and 8 <= len(partial) <= 16


def test_server_default_deadline_applies(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = slow_env(mlxq_env, MLXQ_REQUEST_TIMEOUT="1")
    processes.worker(env)
    api = processes.api(env)
    response = httpx.post(f"{api}/ask", json={"question": "q", "max_tokens": 300}, timeout=10)
    assert response.status_code == 504


def test_openai_routes_take_a_timeout_too(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = slow_env(mlxq_env)
    processes.worker(env)
    api = processes.api(env)
    body = {
        "model": "mlxq/SmolLM2-135M-Instruct-Q4_1",
        "messages": [{"role": "user", "content": "q"}],
        "max_tokens": 300,
        "timeout": 1,
    }
    response = httpx.post(f"{api}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert response.json()["error"]["partial_content"].startswith("w0 w1")
