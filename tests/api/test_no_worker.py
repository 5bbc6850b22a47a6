"""With no worker running, a request gets a 503 within the queue deadline, never a hang,
and its job is taken back out of the queue. The API is served on a thread of this process
(tests/support/fleet.py)."""

import logging
import time

import httpx
import pytest
import redis


def test_no_worker_gets_503_within_the_queue_deadline(make_fleet, redis_url: str) -> None:
    with make_fleet(workers=0, queue_timeout=1.5) as fleet:
        started = time.monotonic()
        response = httpx.post(
            f"{fleet.api}/ask", json={"question": "secret-question-text"}, timeout=30
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "no_worker"
    assert "No worker took the request within 1.5 s" in body["detail"]
    assert 1.4 <= elapsed < 5
    client = redis.Redis.from_url(redis_url)
    queues = [k for k in client.keys("rq:queue:*")]
    assert all(client.llen(k) == 0 for k in queues)  # withdrawn, not left for a later worker
    assert client.keys("rq:job:*") == []


def test_logs_carry_request_ids_and_timings_not_prompts(
    make_fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything any logger of the API writes
    with make_fleet(workers=0, queue_timeout=0.2) as fleet:
        response = httpx.post(
            f"{fleet.api}/ask", json={"question": "secret-question-text"}, timeout=30
        )
    assert response.status_code == 503
    request_id = response.headers["x-request-id"]
    assert f"{request_id} POST /ask -> 503 in" in caplog.text
    assert "secret-question-text" not in caplog.text
