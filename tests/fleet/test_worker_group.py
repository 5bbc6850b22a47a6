"""A worker group: the demo model split over two local ranks started by MLX's own launcher
(``mlx.launch --backend ring -n 2 ... mlxq worker``, or ``mlxq group -n 2``), as one worker
of a real fleet.

The group answers 8 concurrent greedy requests exactly as the session's single worker does,
and constrained, tool-calling, logprob and seeded requests too, reports its ranks in /fleet,
and ends jobs on cancellation and deadline; a rank killed or
stopped ends the whole group within seconds, its jobs answered by a worker beside it, and a
restarted group serves again.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.cpu import cpu_seconds
from tests.faults.helpers import live_worker_names, running_jobs
from tests.support.processes import Processes, Service, free_ports, wait_until

QUESTIONS = [
    "What is the capital of France?",
    "Name three colors.",
    "Count from one to five.",
    "Repeat after me: the quick brown fox.",
    "What is two plus two?",
    "Say hello in Spanish.",
    "Write a haiku about rain.",
    "Which animal says moo?",
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
FEATURES = [
    {"messages": [{"role": "user", "content": "Write a haiku about rain."}], "max_tokens": 24},
    {
        "messages": [{"role": "user", "content": "Give a city and its country as JSON."}],
        "max_tokens": 40,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "place",
                "schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city", "country"],
                    "additionalProperties": False,
                },
            },
        },
    },
    {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "max_tokens": 40,
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    },
    {
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "max_tokens": 8,
        "logprobs": True,
        "top_logprobs": 2,
    },
    {
        "messages": [{"role": "user", "content": "Tell me about cats."}],
        "max_tokens": 16,
        "temperature": 0.9,
        "seed": 7,
    },
]
GROUP_TIMEOUT_S = 4.0
GONE_WITHIN_S = 30.0


def chat(api: str, question: str, max_tokens: int = 16) -> httpx.Response:
    body = {
        "model": "mlxq/SmolLM2-135M-Instruct-Q4_1",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return httpx.post(f"{api}/v1/chat/completions", json=body, timeout=120)


def answers(api: str, max_tokens: int = 16) -> list[str]:
    """The 8 questions at once (one batch), greedy."""
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        responses = list(pool.map(lambda q: chat(api, q, max_tokens), QUESTIONS))
    for response in responses:
        assert response.status_code == 200, response.text
    return [r.json()["choices"][0]["message"]["content"] for r in responses]


def choice(api: str, body: dict) -> dict:
    """The first choice's message, finish reason and logprobs (rounded: the same numbers
    from two processes may differ in the last bits of a float's printing)."""
    sent = {"model": "mlxq/SmolLM2-135M-Instruct-Q4_1", "temperature": 0, **body}
    response = httpx.post(f"{api}/v1/chat/completions", json=sent, timeout=120)
    assert response.status_code == 200, response.text
    first = response.json()["choices"][0]
    message = first["message"]
    for call in message.get("tool_calls") or []:
        call.pop("id", None)  # made up per answer
    logprobs = [
        (item["token"], round(item["logprob"], 3))
        for item in (first.get("logprobs") or {}).get("content") or []
    ]
    return {"message": message, "finish_reason": first["finish_reason"], "logprobs": logprobs}


def group_env(mlxq_env: dict[str, str]) -> dict[str, str]:
    return {
        **mlxq_env,
        "MLXQ_WORKER_CONCURRENCY": "8",
        "MLXQ_MAX_TOKENS_CAP": "100000",
        "MLXQ_GROUP_TIMEOUT_S": str(GROUP_TIMEOUT_S),
    }


IDLE_WINDOW_S = 4.0
IDLE_CPU_S = 1.0
"""What an idle group's three processes may use in IDLE_WINDOW_S: rank 0's idle turn and the
watch's beats (a polling launcher and follower used over 6 s)."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped yet) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(launcher: subprocess.Popen, within: float) -> None:
    """The launcher and every rank exited within ``within`` seconds."""
    pids = list(launcher.rank_pids.values())  # type: ignore[attr-defined]
    wait_until(
        lambda: launcher.poll() is not None and not any(alive(p) for p in pids),
        within,
        "the group's processes to exit",
        interval=0.2,
    )


@pytest.mark.timeout(400)
def test_group_answers_as_one_worker_does_and_ends_jobs_on_request(
    processes: Processes, mlxq_env: dict[str, str], model_service: Service
) -> None:
    env = group_env(mlxq_env)
    api = processes.api(env)
    launcher = processes.group(env, shortcut=True)
    (name,) = live_worker_names(env["MLXQ_REDIS_URL"])

    assert answers(api) == answers(model_service.base_url)

    # idle, the group keeps no core busy: neither the launcher's output loop nor a follower
    # waiting for rank 0's next plan (each used most of a core, polling, before)
    pids = [launcher.pid, *launcher.rank_pids.values()]  # type: ignore[attr-defined]
    time.sleep(0.5)
    before = cpu_seconds(pids)
    time.sleep(IDLE_WINDOW_S)
    assert cpu_seconds(pids) - before < IDLE_CPU_S

    (worker,) = httpx.get(f"{api}/fleet", timeout=10).json()["workers"]
    assert worker["name"] == name
    assert worker["group"]["ranks"] == 2
    assert worker["group"]["split"] == "pipeline"  # 9 heads do not divide between 2 ranks
    assert len(worker["group"]["hosts"]) == 2

    # a client that goes away: its job ends on both ranks (they stay in step)
    body = {
        "model": "mlxq/SmolLM2-135M-Instruct-Q4_1",
        "messages": [{"role": "user", "content": "Tell a very long story."}],
        "max_tokens": 2000,
        "stream": True,
    }
    with httpx.stream("POST", f"{api}/v1/chat/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    wait_until(lambda: running_jobs(env["MLXQ_REDIS_URL"], name) == 0, 10, "the cancel")

    # a deadline that passes mid-answer: a 504 with what was generated
    started = time.monotonic()
    late = httpx.post(
        f"{api}/ask",
        json={"question": "Tell a long story.", "max_tokens": 2000, "timeout": 2},
        timeout=60,
    )
    assert late.status_code == 504, late.text
    assert late.json()["partial_answer"]
    assert time.monotonic() - started < 10

    # still in step, and every kind of request answered as the single worker answers it:
    # constrained decoding, a forced tool call, logprobs, seeded sampling, sent together
    with concurrent.futures.ThreadPoolExecutor(len(FEATURES)) as pool:
        grouped = list(pool.map(lambda body: choice(api, body), FEATURES))
    alone = [choice(model_service.base_url, body) for body in FEATURES]
    assert grouped == alone

    # a rank that stops (SIGSTOP: a Mac asleep) ends the group; woken, it ends too
    rank1 = launcher.rank_pids[1]  # type: ignore[attr-defined]
    os.kill(rank1, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        rank0 = launcher.rank_pids[0]  # type: ignore[attr-defined]
        wait_until(lambda: not alive(rank0), GONE_WITHIN_S, "rank 0 to end")
        assert time.monotonic() - stopped_at < GROUP_TIMEOUT_S + 10
    finally:
        os.kill(rank1, signal.SIGCONT)
    wait_gone(launcher, GONE_WITHIN_S)
    wait_until(lambda: not live_worker_names(env["MLXQ_REDIS_URL"]), 10, "the group to leave")


@pytest.mark.timeout(400)
def test_a_killed_rank_ends_its_group_and_a_worker_beside_it_answers(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = group_env(mlxq_env)
    api = processes.api(env)
    launcher = processes.group(env, shortcut=True)
    (group_name,) = live_worker_names(env["MLXQ_REDIS_URL"])
    processes.worker(env)  # a plain worker beside the group

    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        futures = [pool.submit(chat, api, q, 60) for q in QUESTIONS]
        wait_until(
            lambda: running_jobs(env["MLXQ_REDIS_URL"], group_name) >= 2,
            60,
            "jobs to run on the group",
        )
        killed_at = time.monotonic()
        os.kill(launcher.rank_pids[1], signal.SIGKILL)  # type: ignore[attr-defined]
        wait_gone(launcher, GONE_WITHIN_S)
        gone_after = time.monotonic() - killed_at
        responses = [f.result() for f in futures]

    for response in responses:  # every request answered: retried on the plain worker
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"]
    assert gone_after < GONE_WITHIN_S
    assert group_name not in live_worker_names(env["MLXQ_REDIS_URL"])
    log = Path(launcher.log_path).read_text()  # type: ignore[attr-defined]
    assert "the group ends" in log

    # started again, the group serves again, then stops cleanly on SIGTERM to rank 0
    again = processes.group(env, shortcut=True)
    assert chat(api, QUESTIONS[0]).status_code == 200
    os.kill(again.rank_pids[0], signal.SIGTERM)  # type: ignore[attr-defined]
    wait_gone(again, GONE_WITHIN_S)
    assert again.returncode == 0


def test_a_split_the_model_cannot_take_ends_the_group_with_one_line(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    env = group_env(mlxq_env) | {"MLXQ_GROUP_SPLIT": "tensor"}  # 9 heads, 2 ranks
    port = str(free_ports(2))
    # started by mlx.launch itself, as a user may (the other tests use mlxq group)
    launch = str(Path(sys.executable).with_name("mlx.launch"))
    launcher = processes.start("worker", env, [launch, "--backend", "ring", "-n", "2"] + [
        "--starting-port", port
    ])  # fmt: skip
    launcher.wait(120)  # mlx.launch itself exits 0 whatever its ranks did
    log = Path(launcher.log_path).read_text()  # type: ignore[attr-defined]
    assert "exited with code 1" in log  # the rank that failed first; the other may be ended
    # rank 0 says it as the worker's start-up error, a follower as its share's (whichever
    # fails first is heard: the launcher then ends the other)
    why = "MLXQ_GROUP_SPLIT=tensor: its 9 attention heads do not divide among 2 ranks"
    lines = [line for line in log.splitlines() if why in line]
    assert lines and all(line.startswith("mlxq worker: ") for line in lines), log
    assert "Traceback" not in log
    assert not live_worker_names(env["MLXQ_REDIS_URL"])
