"""Nothing of a batch is lost: a worker killed with SIGKILL, the API process killed and
started again, Redis restarted with append-only persistence. Every line is answered, and
answered once in the output file."""

import io
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis

from shared import protocol
from tests.batch.test_batch_api import finished, jsonl, lines_file
from tests.faults.helpers import slow_env
from tests.support.processes import Processes, wait_until
from tests.support.redis_server import RedisServer

LINES = 24
WORDS = 10  # one second per line


def start_batch(client: openai.OpenAI) -> str:
    upload = client.files.create(
        file=("in.jsonl", io.BytesIO(lines_file(LINES, WORDS))), purpose="batch"
    )
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def client_for(api: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api}/v1", api_key="unused", max_retries=0)


def wait_for_answers(client: openai.OpenAI, batch_id: str, at_least: int) -> None:
    wait_until(
        lambda: client.batches.retrieve(batch_id).request_counts.completed >= at_least,
        60,
        f"{at_least} answered lines",
    )


def assert_every_line_answered_once(client: openai.OpenAI, batch_id: str) -> None:
    done = finished(client, batch_id, timeout=120)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    output = jsonl(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in output) == sorted(f"r{i}" for i in range(LINES))
    expected = " ".join(f"w{i}" for i in range(WORDS))
    assert all(
        r["response"]["body"]["choices"][0]["message"]["content"] == expected for r in output
    )


def test_a_worker_killed_mid_batch_loses_no_line(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="4")
    doomed = processes.worker(env)
    processes.worker(env)
    client = client_for(processes.api(env))
    batch_id = start_batch(client)
    wait_for_answers(client, batch_id, 2)
    os.kill(doomed.pid, signal.SIGKILL)
    assert_every_line_answered_once(client, batch_id)


def generated_words(redis_url: str) -> int:
    """Words the live workers generated in all (their heartbeat's tokens_total), once the
    counters have settled."""
    connection = redis.Redis.from_url(redis_url)

    def total() -> int:
        names = [name for name, _ in protocol.live_worker_beats(connection)]
        return sum(stats.tokens_total for stats in protocol.read_stats(connection, names))

    settled = [total()]

    def unchanged() -> bool:
        settled.append(total())
        return settled[-1] == settled[-2]

    wait_until(unchanged, 10, "the workers' counters to settle", interval=1.5)
    return settled[-1]


def test_an_api_restart_mid_batch_loses_no_line(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """The new API process adopts the lines the dead one left running. Before: they were
    stopped and run again (332 generations for 300 lines)."""
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="4")
    processes.worker(env)
    first_api = processes.api(env)
    client = client_for(first_api)
    batch_id = start_batch(client)
    wait_for_answers(client, batch_id, 2)
    api_process = next(p for p in processes._started if "/api-" in p.log_path)  # type: ignore[attr-defined]
    api_process.send_signal(signal.SIGKILL)
    api_process.wait(10)
    client = client_for(processes.api(env))
    assert_every_line_answered_once(client, batch_id)
    assert generated_words(env["MLXQ_REDIS_URL"]) == LINES * WORDS  # none generated twice


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path, appendonly=True, options=("--appendfsync", "always")) as server:
        yield server


def test_a_redis_restart_with_aof_loses_no_line(
    processes: Processes, aof_redis: RedisServer, cache_dir: Path
) -> None:
    env = slow_env(
        {"MLXQ_REDIS_URL": aof_redis.url, "MLXQ_CACHE_DIR": str(cache_dir)},
        MLXQ_WORKER_CONCURRENCY="4",
    )
    processes.worker(env)
    client = client_for(processes.api(env))
    batch_id = start_batch(client)
    wait_for_answers(client, batch_id, 2)
    aof_redis.stop()
    aof_redis.start()
    assert_every_line_answered_once(client, batch_id)
    assert generated_words(aof_redis.url) == LINES * WORDS  # before: 260 generations for 200
