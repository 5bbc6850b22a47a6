"""A client that disconnects: a queued job is dropped before it starts; a running one stops
within one decode step and its batch slot is freed. The API and the worker (a real RQ worker
whose engine makes one word per 0.1 s) run on threads of this process: what is tested is
what they do when a connection closes, not how a process stops (tests/support/fleet.py)."""

import concurrent.futures
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.faults.helpers import (
    SLOW_ENGINE,
    STEP_S,
    ask_in_background,
    live_worker_names,
    rq_queue,
)
from tests.support.processes import wait_until


def cancelled_jobs(redis_url: str) -> list[str]:
    """Jobs RQ records as canceled (not failed: nothing broke)."""
    queue = rq_queue(redis_url)
    job_ids = queue.canceled_job_registry.get_job_ids()
    for job_id in job_ids:
        job = Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer)
        assert job.get_status() == "canceled"
    if job_ids:
        assert queue.failed_job_registry.count == 0 and queue.started_job_registry.count == 0
    return job_ids


def give_up_after(api: str, body: dict, seconds: float) -> None:
    """A client that stops waiting: the connection is closed after ``seconds``."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{api}/ask", json=body, timeout=seconds)


@pytest.fixture
def one_slot(make_fleet, redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """An API and a worker with a single batch slot, so a stuck job would block the next."""
    with make_fleet(engine=SLOW_ENGINE, worker_concurrency=1) as fleet:
        yield fleet.api, {"MLXQ_REDIS_URL": redis_url}


def test_running_job_stops_when_its_client_disconnects(one_slot) -> None:
    api, env = one_slot
    give_up_after(api, {"question": "q", "max_tokens": 300}, seconds=1.0)  # a 30 s job
    gone_at = time.monotonic()

    wait_until(lambda: cancelled_jobs(env["MLXQ_REDIS_URL"]), 5, "the cancel")
    stopped_after = time.monotonic() - gone_at
    assert stopped_after < 1.0 + STEP_S
    # The slot is free: the next request is answered at once, not after 30 s.
    started = time.monotonic()
    response = httpx.post(f"{api}/ask", json={"question": "q", "max_tokens": 3}, timeout=10)
    assert response.status_code == 200 and time.monotonic() - started < 2


def test_queued_job_is_dropped_before_it_starts(one_slot) -> None:
    api, env = one_slot
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    queue = rq_queue(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = ask_in_background(pool, api, {"question": "q", "max_tokens": 30})  # 3 s
        wait_until(lambda: queue.started_job_registry.count == 1, 5, "the first job to start")
        give_up_after(api, {"question": "q", "max_tokens": 2}, seconds=0.5)
        wait_until(lambda: queue.count == 0, 2, "the queued job to be withdrawn")
        assert busy.result()[0].status_code == 200
    assert len(connection.keys("rq:job:*")) == 1  # only the first job ever existed in RQ's eyes
    assert queue.finished_job_registry.count == 1 and queue.failed_job_registry.count == 0


def test_stream_stops_generating_when_the_client_disconnects(one_slot) -> None:
    api, env = one_slot
    body = {"question": "q", "max_tokens": 300, "stream": True}
    with httpx.stream("POST", f"{api}/ask", json=body, timeout=10) as response:
        for line in response.iter_lines():
            if line == "data:  w2":  # "data: " + the piece " w2"
                break
    gone_at = time.monotonic()
    wait_until(lambda: cancelled_jobs(env["MLXQ_REDIS_URL"]), 5, "the cancel")
    assert time.monotonic() - gone_at < 1.0
    assert live_worker_names(env["MLXQ_REDIS_URL"])  # the worker is fine
