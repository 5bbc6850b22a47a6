"""The ``mlxq`` command's smaller promises: ``--version``; ``mlxq ask -`` reads the question
from standard input and says what went wrong in one line; ``mlxq status`` tells a model's
queues apart (its shared queue, each worker's own, each batch's lane) and counts refused
requests apart from failed jobs."""

import redis
from rq.queue import Queue
from rq.registry import FailedJobRegistry

from shared import protocol, rq_bridge
from shared.keys import batch_lane_name, queue_name_for_model, worker_queue_name
from tests.faults.helpers import slow_env
from tests.support.processes import Processes, free_port
from tests.test_cli import mlxq


def test_version(mlxq_env: dict[str, str]) -> None:
    result = mlxq("--version", env=mlxq_env)
    assert result.returncode == 0
    assert result.stdout.startswith("mlxq ") and result.stdout.split()[1][0].isdigit()


def test_ask_reads_stdin_and_tells_errors_in_one_line(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = slow_env(mlxq_env)
    processes.worker(env)
    port = processes.api(env).rsplit(":", 1)[1]
    env = {**env, "MLXQ_PORT": port}

    answered = mlxq("ask", "-", "--max-tokens", "3", env=env, stdin="What is a queue?\n")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == "w0 w1 w2\n"

    refused = mlxq("ask", "hi", "--max-tokens", "0", env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "mlxq ask: max_tokens: Input should be greater than or equal to 1 (HTTP 422)"
    ]
    empty = mlxq("ask", "-", env=env, stdin="   \n")
    assert empty.returncode == 1 and len(empty.stderr.splitlines()) == 1
    assert "question" in empty.stderr and "Traceback" not in empty.stderr

    unreachable = mlxq("ask", "hi", env={**env, "MLXQ_PORT": str(free_port())})
    assert unreachable.returncode == 1 and len(unreachable.stderr.splitlines()) == 1
    assert unreachable.stderr.startswith("mlxq ask: cannot reach the API at ")


def test_status_tells_the_three_queues_of_a_model_apart(mlxq_env: dict[str, str]) -> None:
    connection = redis.Redis.from_url(mlxq_env["MLXQ_REDIS_URL"])
    shared = queue_name_for_model("org/model-l")
    own, lane = worker_queue_name(shared, "w1"), batch_lane_name(shared, "b7")
    with connection.pipeline() as pipeline:
        stats = protocol.WorkerStats(model="org/model-l", queues=[own, shared, lane], slots=4)
        protocol.add_heartbeat(pipeline, "w1", stats, ttl_s=60, running=[])
        for name, waiting in ((shared, 3), (own, 1), (lane, 2)):
            pipeline.sadd(Queue.redis_queues_keys, Queue.redis_queue_namespace_prefix + name)
            pipeline.rpush(rq_bridge.queue_key(name), *[f"{name}-{i}" for i in range(waiting)])
        # The shared queue's failed registry keeps two jobs; one of them was a refusal.
        failed = FailedJobRegistry(shared, connection=connection).key
        pipeline.zadd(failed, {"broken": 4e9, "too-long": 4e9})
        rq_bridge.add_refused(pipeline, shared, "too-long", 300)
        pipeline.execute()

    result = mlxq("status", env=mlxq_env)
    assert result.returncode == 0, result.stderr
    rows = {
        " ".join(line.split()[1:3]) if line.split()[1] != "shared" else "shared": line
        for line in result.stdout.splitlines()
        if line.startswith("org/model-l")
    }
    assert set(rows) == {"shared", "worker w1", "batch b7"}
    # model, lane, queued, failed, refused, queue
    assert rows["shared"].split()[2:5] == ["3", "1", "1"]
    assert rows["worker w1"].split()[3:6] == ["1", "0", "0"]
    assert rows["batch b7"].split()[3:6] == ["2", "0", "0"]
