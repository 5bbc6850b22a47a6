"""Abandoned work stops: a client that closes at once, a stream that leaves while queued,
an API process that dies. And a busy fleet keeps a request that a missing one would not."""

import concurrent.futures
import json
import signal
import socket
import struct
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.faults.helpers import STEP_S, ask_in_background, rq_queue, slow_env
from tests.faults.test_client_gone import cancelled_jobs
from tests.support.processes import Processes, wait_until

LONG = {"question": "q", "max_tokens": 300}  # 30 s of 0.1 s words


def _send_and_close(api: str, body: dict, reset: bool) -> None:
    """Send a whole request and close the connection at once (RST with ``reset``)."""
    url = urlsplit(api)
    payload = json.dumps(body).encode()
    request = (
        f"POST /ask HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    sock = socket.create_connection((url.hostname, url.port))
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(request)
    sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_client_that_closes_at_once_never_gets_a_full_generation(
    processes: Processes, mlxq_env: dict[str, str], reset: bool
) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="1")
    processes.worker(env)
    api = processes.api(env)
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    for _ in range(5):
        _send_and_close(api, LONG, reset)
        time.sleep(0.3)
    # each was dropped from the queue or stopped within a step of its cancel reaching the
    # worker (on a loaded 2-core machine the API may take a moment to see the close); a job
    # that ran to the end would take 30 s
    wait_until(
        lambda: queue.started_job_registry.count == 0 and queue.count == 0,
        3.0,
        "every abandoned job to be dropped or stopped",
    )
    # nothing ran to the end, and the one slot is free at once
    assert queue.finished_job_registry.count == 0
    started = time.monotonic()
    response = httpx.post(f"{api}/ask", json={"question": "q", "max_tokens": 2}, timeout=10)
    assert response.status_code == 200 and time.monotonic() - started < 2


def test_a_stream_that_leaves_while_queued_is_dropped_within_a_second(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="1")
    processes.worker(env)
    api = processes.api(env)
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = ask_in_background(pool, api, {"question": "q", "max_tokens": 40})  # 4 s
        wait_until(lambda: queue.started_job_registry.count == 1, 5, "the first job")
        with pytest.raises(httpx.ReadTimeout):
            body = {**LONG, "stream": True}
            with httpx.stream("POST", f"{api}/ask", json=body, timeout=0.5) as response:
                response.read()
        gone_at = time.monotonic()
        wait_until(lambda: queue.count == 0, 2, "the queued stream's job to be withdrawn")
        assert time.monotonic() - gone_at < 1.5  # not at the next keep-alive (10 s)
        assert busy.result()[0].status_code == 200


def test_jobs_stop_when_their_api_process_dies(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env)
    processes.worker(env)
    api_process_count = len(processes._started)
    api = processes.api(env)
    api_process = processes._started[api_process_count]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = ask_in_background(pool, api, LONG, timeout=60)
        queue = rq_queue(env["MLXQ_REDIS_URL"])
        wait_until(lambda: queue.started_job_registry.count == 1, 5, "the job to start")
        api_process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(httpx.HTTPError):
            pending.result()
    wait_until(lambda: cancelled_jobs(env["MLXQ_REDIS_URL"]), 15, "the orphaned job to stop")
    assert time.monotonic() - killed_at < 5 + 3 + 2  # beat expiry + grace + a heartbeat
    assert queue.finished_job_registry.count == 0


def test_a_busy_fleet_keeps_a_request_past_the_queue_timeout(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="1", MLXQ_QUEUE_TIMEOUT="1")
    processes.worker(env)
    api = processes.api(env)
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = ask_in_background(pool, api, {"question": "q", "max_tokens": 30})  # 3 s
        wait_until(lambda: queue.started_job_registry.count == 1, 5, "the first job")
        response = httpx.post(
            f"{api}/ask", json={"question": "q", "max_tokens": 2, "timeout": 20}, timeout=30
        )
        assert busy.result()[0].status_code == 200
    assert response.status_code == 200  # waited behind the busy worker, no 503 no_worker
    assert response.json()["answer"] == "w0 w1"


def test_no_live_worker_is_still_a_prompt_503(processes: Processes, mlxq_env: dict[str, str]):
    env = slow_env(mlxq_env, MLXQ_QUEUE_TIMEOUT="1")
    api = processes.api(env)
    started = time.monotonic()
    response = httpx.post(f"{api}/ask", json={"question": "q", "timeout": 20}, timeout=30)
    assert response.status_code == 503 and response.json()["code"] == "no_worker"
    assert time.monotonic() - started < 1 + 2 * STEP_S + 2
