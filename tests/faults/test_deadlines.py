"""Deadlines: a request may carry a timeout (the server has a default); a job whose deadline
passed is never started, and the client gets a 504 with a clear message. The API and a real
RQ worker (one word per 0.1 s) run on threads of this process (tests/support/fleet.py)."""

import concurrent.futures
import time

import httpx

from tests.faults.helpers import SLOW_ENGINE, ask_in_background, rq_queue
from tests.support.processes import wait_until


def test_job_whose_deadline_passes_in_the_queue_is_never_started(
    make_fleet, redis_url: str
) -> None:
    queue = rq_queue(redis_url)
    with (
        make_fleet(engine=SLOW_ENGINE, worker_concurrency=1) as fleet,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        api = fleet.api
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


def test_generation_stops_at_the_deadline(make_fleet) -> None:
    body = {"question": "q", "max_tokens": 300, "timeout": 1.5}
    with make_fleet(engine=SLOW_ENGINE) as fleet:
        started = time.monotonic()
        response = httpx.post(f"{fleet.api}/ask", json=body, timeout=10)
        took = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["detail"] == "The request's time limit passed while generating."
    assert took < 2.5
    # what was generated comes with the 504 (about 1.5 s of 0.1 s words), not thrown away
    partial = response.json()["partial_answer"].split()
    assert partial[:3] == ["w0", "w1", "w2"] and 8 <= len(partial) <= 16


def test_server_default_deadline_applies(make_fleet) -> None:
    with make_fleet(engine=SLOW_ENGINE, request_timeout=1) as fleet:
        body = {"question": "q", "max_tokens": 300}
        response = httpx.post(f"{fleet.api}/ask", json=body, timeout=10)
    assert response.status_code == 504


def test_openai_routes_take_a_timeout_too(make_fleet) -> None:
    body = {
        "model": "mlxq/SmolLM2-135M-Instruct-Q4_1",
        "messages": [{"role": "user", "content": "q"}],
        "max_tokens": 300,
        "timeout": 1,
    }
    with make_fleet(engine=SLOW_ENGINE) as fleet:
        response = httpx.post(f"{fleet.api}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "timeout"
    assert response.json()["error"]["partial_content"].startswith("w0 w1")
