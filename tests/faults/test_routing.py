"""Cache-aware routing: a conversation's next turn goes to the worker holding its prefix;
new conversations spread; a dead or stalled owner never holds a request back."""

import concurrent.futures
import signal
import time

import httpx
import pytest
import redis

from api.fleet.beat import REAP_GRACE_S
from shared import protocol
from shared.settings import DEMO_MODEL_ID
from tests.faults.helpers import live_worker_names, slow_env
from tests.support.processes import Processes, wait_until

ROUTE_WAIT_S = 1.0
WORKER = "x-mlxq-worker"


def chat(api: str, messages: list[dict], max_tokens: int = 3) -> httpx.Response:
    body = {"model": DEMO_MODEL_ID, "messages": messages, "max_tokens": max_tokens}
    response = httpx.post(f"{api}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response


def next_turn(messages: list[dict], response: httpx.Response, question: str) -> list[dict]:
    answer = response.json()["choices"][0]["message"]["content"]
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": question},
    ]


def two_workers(processes: Processes, mlxq_env: dict[str, str], **extra: str):
    env = slow_env(mlxq_env, **{"MLXQ_ROUTE_WAIT": str(ROUTE_WAIT_S), **extra})
    workers = [processes.worker(env), processes.worker(env)]
    return env, workers, processes.api(env)


def test_a_conversation_sticks_to_its_worker_and_new_ones_spread(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env, _, api = two_workers(processes, mlxq_env)
    conversations = [[{"role": "user", "content": f"Hello number {i}"}] for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = list(pool.map(lambda m: chat(api, m, max_tokens=10), conversations))
    owners = [r.headers[WORKER] for r in first]
    assert set(owners) == live_worker_names(env["MLXQ_REDIS_URL"])  # new ones spread out
    for conversation, response, owner in zip(conversations, first, owners, strict=True):
        messages = conversation
        for turn in range(3):
            messages = next_turn(messages, response, f"And then {turn}?")
            response = chat(api, messages)
            assert response.headers[WORKER] == owner  # the prefix lives there


def test_a_killed_owner_loses_no_request(processes: Processes, mlxq_env: dict[str, str]) -> None:
    env, workers, api = two_workers(processes, mlxq_env)
    names = live_worker_names(env["MLXQ_REDIS_URL"])
    messages = [{"role": "user", "content": "Tell me a story"}]
    response = chat(api, messages)
    owner = response.headers[WORKER]
    doomed = next(w for w in workers if _name_of(w, env) == owner)
    doomed.send_signal(signal.SIGKILL)
    started = time.monotonic()
    follow_up = chat(api, next_turn(messages, response, "Go on"))
    assert follow_up.headers[WORKER] != owner and follow_up.headers[WORKER] in names
    assert time.monotonic() - started < ROUTE_WAIT_S + 5


def test_a_request_for_a_busy_owner_is_answered_by_another_within_the_bound(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env, workers, api = two_workers(processes, mlxq_env, MLXQ_WORKER_CONCURRENCY="1")
    messages = [{"role": "user", "content": "Hi there"}]
    response = chat(api, messages)
    owner = response.headers[WORKER]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # The owner's one slot is taken by a long turn of the same conversation; the next
        # request for that prefix either sees it busy (shared queue at once) or, when the
        # owner's last heartbeat still showed a free slot, waits in its own queue until
        # MLXQ_ROUTE_WAIT and then goes to the shared queue.
        long_turn = pool.submit(chat, api, next_turn(messages, response, "A long one"), 40)
        time.sleep(0.3)
        started = time.monotonic()
        follow_up = chat(api, next_turn(messages, response, "A short one"))
        waited = time.monotonic() - started
        assert long_turn.result().headers[WORKER] == owner
    assert follow_up.headers[WORKER] != owner
    assert waited < ROUTE_WAIT_S + 2


def _name_of(process, env: dict[str, str]) -> str:
    """The RQ name of a worker process (its pid is in the stats it publishes)."""
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    names = sorted(live_worker_names(env["MLXQ_REDIS_URL"]))
    for name, stats in zip(names, protocol.read_stats(connection, names), strict=True):
        if stats.pid == process.pid:
            return name
    raise AssertionError(f"no live worker has pid {process.pid}")


@pytest.mark.alone  # its bound (4.5 s from the kill) is about timing: not beside a busy suite
def test_a_killed_worker_is_noticed_in_seconds_and_gets_no_request(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """Its connections close with it: the API sees that before its heartbeat goes stale.
    Before: the reaper noticed a killed worker 6 s after the kill, and a conversation's next
    turn was routed to the dead worker's own queue and waited there (4.9 s against 0.8 s)."""
    env, workers, api = two_workers(processes, mlxq_env, MLXQ_ROUTE_WAIT="30")
    connection = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
    # A Redis that has just started gives every worker a grace first (api/fleet/beat.py).
    wait_until(
        lambda: connection.info("server")["uptime_in_seconds"] > REAP_GRACE_S, 15, "Redis' grace"
    )
    messages = [{"role": "user", "content": "Tell me a story"}]
    response = chat(api, messages)
    owner = response.headers[WORKER]
    doomed = next(w for w in workers if _name_of(w, env) == owner)
    doomed.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    follow_up = chat(api, next_turn(messages, response, "Go on"))  # 3 words: 0.3 s
    answered_in = time.monotonic() - killed_at
    assert follow_up.headers[WORKER] != owner
    assert answered_in < 4.5, answered_in  # not MLXQ_ROUTE_WAIT (30 s), nor the 5 s window
    assert connection.zscore(protocol.LIVE_WORKERS, owner) is None  # reaped already
