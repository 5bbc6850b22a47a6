"""Redis restarts without persistence: a queued request whose job Redis lost gets a prompt
503 (not a 504 at its deadline), and a request already generating is still answered."""

import concurrent.futures
import time
from pathlib import Path

from tests.faults.helpers import ask_in_background, rq_queue, slow_env
from tests.support.processes import Processes, wait_until
from tests.support.redis_server import RedisServer


def test_a_lost_queued_job_is_a_prompt_503_and_a_running_one_finishes(
    processes: Processes, mlxq_env: dict[str, str], tmp_path: Path
) -> None:
    with RedisServer(tmp_path) as server:  # no persistence: a restart loses everything
        env = slow_env(
            {**mlxq_env, "MLXQ_REDIS_URL": server.url},
            MLXQ_WORKER_CONCURRENCY="1",
            MLXQ_QUEUE_TIMEOUT="60",
        )
        processes.worker(env)
        api = processes.api(env)
        queue = rq_queue(server.url)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = ask_in_background(pool, api, {"question": "q", "max_tokens": 60}, 60)
            wait_until(lambda: queue.started_job_registry.count == 1, 5, "the first job")
            queued = ask_in_background(
                pool, api, {"question": "q", "max_tokens": 2, "timeout": 120}, 60
            )
            wait_until(lambda: queue.count == 1, 5, "the second job to queue")
            server.stop()
            server.start()
            restarted_at = time.monotonic()
            lost, lost_at = queued.result()
            answered, _ = running.result()
    assert lost.status_code == 503 and lost.json()["code"] == "redis_unavailable"
    assert "lost this request" in lost.json()["detail"]
    assert lost_at - restarted_at < 10  # two checks 2 s apart, not the 120 s deadline
    assert answered.status_code == 200 and answered.json()["answer"].startswith("w0 w1")
