"""`rq suspend` stops a fleet of mlxq workers from taking jobs; `rq resume` brings it back."""

import concurrent.futures
import time

import httpx
import redis
from rq.suspension import resume, suspend
from rq.worker import Worker, WorkerStatus

from tests.faults.helpers import SLOW_ENGINE, ask_in_background


def _worker_state(redis_url: str) -> str:
    (worker,) = Worker.all(connection=redis.Redis.from_url(redis_url))
    return worker.get_state()


def test_suspended_workers_take_no_job_until_resumed(make_fleet, redis_url: str) -> None:
    """The API and a real RQ worker run on threads of this process (tests/support/fleet.py)."""
    with make_fleet(engine=SLOW_ENGINE, queue_timeout=3) as fleet:
        check_suspend_and_resume(fleet.api, redis_url)


def check_suspend_and_resume(api: str, redis_url: str) -> None:
    env = {"MLXQ_REDIS_URL": redis_url}
    connection = redis.Redis.from_url(redis_url)
    body = {"question": "hello", "max_tokens": 2}
    assert httpx.post(f"{api}/ask", json=body, timeout=30).status_code == 200

    suspend(connection)
    time.sleep(2.5)  # the worker looks once a second
    assert _worker_state(env["MLXQ_REDIS_URL"]) == WorkerStatus.SUSPENDED
    started = time.monotonic()
    refused = httpx.post(f"{api}/ask", json=body, timeout=30)
    assert refused.status_code == 503 and refused.json()["code"] == "no_worker"
    assert time.monotonic() - started >= 2.5  # it waited MLXQ_QUEUE_TIMEOUT, untaken

    with concurrent.futures.ThreadPoolExecutor() as pool:
        waiting = ask_in_background(pool, api, body, timeout=30)
        time.sleep(1.0)
        resume(connection)
        response, _ = waiting.result()
    assert response.status_code == 200 and response.json()["answer"] == "w0 w1"
    assert _worker_state(env["MLXQ_REDIS_URL"]) in (WorkerStatus.IDLE, WorkerStatus.BUSY)
