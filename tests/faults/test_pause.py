"""A worker that pauses (a sleeping Mac, a stopped VM) long enough to be declared dead: its
jobs go to another worker or fail clearly; when it wakes it drops them without a word,
registers again and serves with all its slots. No client gets two answers, no job ends in
both RQ's failed and finished registries."""

import concurrent.futures
import json
import signal
import time

import httpx
import redis
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.worker import Worker

from shared import protocol
from shared.settings import DEMO_MODEL_ID
from tests.faults.helpers import ask_in_background, rq_queue, slow_env
from tests.support.processes import Processes, wait_until

PAUSE_S = 9.0
"""Longer than the liveness window (5 s) plus the reaper's second."""
WORKER = "x-mlxq-worker"


def _pid_name(connection: redis.Redis, pid: int) -> str:
    names = sorted(live_worker_names_from(connection))
    for name, stats in zip(names, protocol.read_stats(connection, names), strict=True):
        if stats.pid == pid:
            return name
    raise AssertionError(f"no live worker with pid {pid}")


def live_worker_names_from(connection: redis.Redis) -> list[str]:
    return [name for name, _ in protocol.live_worker_beats(connection)]


def _registries_are_disjoint(redis_url: str) -> None:
    queue = rq_queue(redis_url)
    finished = set(FinishedJobRegistry(queue=queue).get_job_ids())
    failed = set(FailedJobRegistry(queue=queue).get_job_ids())
    assert not finished & failed


def _one_answer_per_job(connection: redis.Redis, job_ids: list[str]) -> None:
    for job_id in job_ids:
        finals = [
            e for e in protocol.read_events(connection, job_id) if e.type in ("done", "error")
        ]
        assert len(finals) <= 1, f"job {job_id} answered {len(finals)} times"


def _pause(process, seconds: float) -> None:
    process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGCONT)


def _comes_back(connection: redis.Redis, name: str) -> None:
    def registered() -> bool:
        return name in {w.name for w in Worker.all(connection=connection)}

    wait_until(lambda: name in live_worker_names_from(connection), 10, "the worker to beat")
    wait_until(registered, 10, "the worker to register with RQ again")


def test_one_of_two_workers_pauses(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="3")
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    sleeper = processes.worker(env)
    name = _pid_name(connection, sleeper.pid)
    api = processes.api(env)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [
            ask_in_background(pool, api, {"question": "q", "max_tokens": 40}, timeout=60)
            for _ in range(3)
        ]
        wait_until(lambda: connection.scard(protocol.worker_jobs_key(name)) == 3, 10, "jobs")
        job_ids = [j.decode() for j in connection.smembers(protocol.worker_jobs_key(name))]
        processes.worker(env)  # the one that stays awake
        _pause(sleeper, PAUSE_S)
        answers = [f.result()[0] for f in futures]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.json()["answer"].startswith("w0 w1") for a in answers)
    _comes_back(connection, name)
    time.sleep(6)  # the woken worker would have finished its copies by now
    _one_answer_per_job(connection, job_ids)
    _registries_are_disjoint(env["MLXQ_REDIS_URL"])
    assert connection.scard(protocol.worker_jobs_key(name)) == 0
    # it serves again, with all its slots
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda _: httpx.post(
                    f"{api}/v1/completions",
                    json={"model": DEMO_MODEL_ID, "prompt": "x", "max_tokens": 20},
                    timeout=30,
                ),
                range(6),
            )
        )
    assert all(r.status_code == 200 for r in replies)
    assert name in {r.headers[WORKER] for r in replies}
    fleet = httpx.get(f"{api}/fleet").json()
    (row,) = [w for w in fleet["workers"] if w["name"] == name]
    assert row["slots"] == 3


def test_a_lone_worker_pauses(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="2")
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    sleeper = processes.worker(env)
    name = _pid_name(connection, sleeper.pid)
    api = processes.api(env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [
            ask_in_background(pool, api, {"question": "q", "max_tokens": 40}, timeout=60)
            for _ in range(2)
        ]
        wait_until(lambda: connection.scard(protocol.worker_jobs_key(name)) == 2, 10, "jobs")
        job_ids = [j.decode() for j in connection.smembers(protocol.worker_jobs_key(name))]
        _pause(sleeper, PAUSE_S)
        answers = [f.result()[0] for f in futures]
    # No other worker: the jobs failed clearly while it slept, and nothing came after.
    assert [a.status_code for a in answers] == [502, 502]
    assert all(a.json()["code"] == "worker_lost" for a in answers)
    _comes_back(connection, name)
    time.sleep(5)
    _one_answer_per_job(connection, job_ids)
    _registries_are_disjoint(env["MLXQ_REDIS_URL"])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        replies = list(
            pool.map(
                lambda _: httpx.post(f"{api}/ask", json={"question": "q", "max_tokens": 10}),
                range(2),
            )
        )
    assert [r.status_code for r in replies] == [200, 200]
    assert time.monotonic() - started < 5  # both slots at once: about 1 s, not 2
    assert json.loads(replies[0].text)["answer"] == "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"


def test_a_woken_worker_never_cancels_a_job_given_to_another(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """Four running jobs on a worker paused for 8 s; the reaper gives them to the other worker
    (two slots) and back to the queue. Before: at SIGCONT 2 of the 4 waiting clients got 499
    ``cancelled``: the woken worker cancelled its copies in its engine, a cancel for a copy
    that had already ended was kept, and it stopped the same job when the queue gave it back
    (tests/worker/test_engine_thread.py has the exact case). Now every client gets its
    answer."""
    env = slow_env(mlxq_env, MLXQ_WORKER_CONCURRENCY="4")
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    sleeper = processes.worker(env)
    name = _pid_name(connection, sleeper.pid)
    api = processes.api(env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [
            ask_in_background(pool, api, {"question": "q", "max_tokens": 60}, timeout=60)
            for _ in range(4)
        ]
        wait_until(lambda: connection.scard(protocol.worker_jobs_key(name)) == 4, 10, "jobs")
        # The one that stays awake has two slots: two of the retried jobs wait for the woken
        # worker, which then runs jobs it had cancelled in its own engine when it woke.
        processes.worker({**env, "MLXQ_WORKER_CONCURRENCY": "2"})
        _pause(sleeper, 8.0)
        answers = [f.result()[0] for f in futures]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert all(a.json()["answer"] == " ".join(f"w{i}" for i in range(60)) for a in answers)
