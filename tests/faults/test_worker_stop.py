"""SIGTERM to a worker: it stops taking jobs, finishes those in flight, deregisters, exits 0."""

import concurrent.futures
import signal
import time
from pathlib import Path

import redis

from tests.faults.helpers import ask_in_background, live_worker_names, running_jobs, slow_env, words
from tests.support.processes import Processes, wait_until


def test_sigterm_finishes_running_jobs_then_exits_cleanly(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env, MLXQ_QUEUE_TIMEOUT="3")
    api = processes.api(env)
    worker = processes.worker(env)
    (name,) = live_worker_names(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        running = [
            ask_in_background(pool, api, {"question": "q", "max_tokens": 20}) for _ in range(2)
        ]
        wait_until(lambda: running_jobs(env["MLXQ_REDIS_URL"], name) == 2, 10, "jobs to start")
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        late = ask_in_background(pool, api, {"question": "q", "max_tokens": 2})
        assert worker.wait(timeout=30) == 0
        answers = [f.result()[0] for f in running]
        refused = late.result()[0]

    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["answer"] == words(20) for a in answers)
    assert refused.status_code == 503  # the stopping worker took no new job
    client = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    assert name not in live_worker_names(env["MLXQ_REDIS_URL"])
    assert not client.sismember("rq:workers", f"rq:worker:{name}")
    log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "Traceback" not in log


def test_sigterm_on_an_idle_worker_exits_at_once(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    worker = processes.worker(slow_env(mlxq_env))
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 3
