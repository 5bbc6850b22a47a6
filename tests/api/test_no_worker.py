"""With no worker running, a request gets a 503 within the queue deadline, never a hang,
and its job is taken back out of the queue."""

import time
from pathlib import Path

import httpx
import redis

from tests.support.processes import Processes


def test_no_worker_gets_503_within_the_queue_deadline(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    api = processes.api({**mlxq_env, "MLXQ_QUEUE_TIMEOUT": "1.5"})
    started = time.monotonic()
    response = httpx.post(f"{api}/ask", json={"question": "secret-question-text"}, timeout=30)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "no_worker"
    assert "No worker took the request within 1.5 s" in body["detail"]
    assert 1.4 <= elapsed < 5
    client = redis.Redis.from_url(mlxq_env["MLXQ_REDIS_URL"])
    queues = [k for k in client.keys("rq:queue:*")]
    assert all(client.llen(k) == 0 for k in queues)  # withdrawn, not left for a later worker
    assert client.keys("rq:job:*") == []


def test_logs_carry_request_ids_and_timings_not_prompts(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    api = processes.api({**mlxq_env, "MLXQ_QUEUE_TIMEOUT": "0.2"})
    response = httpx.post(f"{api}/ask", json={"question": "secret-question-text"}, timeout=30)
    assert response.status_code == 503
    request_id = response.headers["x-request-id"]
    processes.stop_all()
    log = Path(processes._started[0].log_path).read_text()  # type: ignore[attr-defined]
    assert f"{request_id} POST /ask -> 503 in" in log
    assert "secret-question-text" not in log
