"""Every model on the Mac, one request away: real workers load models on demand, unload
them for memory or keep-alive, refuse what cannot load, serve LoRA adapters on one copy of
their base, and share the work of loading between machines.

Real processes and real MLX, offline: the demo model, a copy of it under another name, two
LoRA adapters with random weights, a model that cannot load and one too large for the
budget (tests/support/model_folders.py). Workers keep quantized weights on the CPU
(MLXQ_CPU_DEQUANTIZE=false: a load takes about a second) and generate a few tokens.
"""

import concurrent.futures
import time
from pathlib import Path

import httpx
import pytest

from shared.settings import DEMO_MODEL_ID
from tests.support.model_folders import (
    broken_model,
    copy_model,
    oversized_model,
    random_adapter,
)
from tests.support.processes import Processes, wait_until

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def demo_folder(cache_dir: Path) -> Path:
    from worker.demo_model import prepare_demo_model

    return prepare_demo_model(cache_dir)


@pytest.fixture(scope="module")
def models(demo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of model folders: ``copy`` and ``copy-2`` (the demo model under other
    names), ``broken`` and ``big``; and beside it ``adapters/`` with two LoRA adapters of the
    demo model."""
    root = tmp_path_factory.mktemp("models")
    copy_model(demo_folder, root / "models" / "copy")
    copy_model(demo_folder, root / "models" / "copy-2")
    broken_model(demo_folder, root / "models" / "broken")
    oversized_model(demo_folder, root / "models" / "big")
    random_adapter(demo_folder, root / "adapters" / "lora-a", seed=1)
    random_adapter(demo_folder, root / "adapters" / "lora-b", seed=2)
    return root


def worker_env(mlxq_env: dict[str, str], models: str, **extra: str) -> dict[str, str]:
    return {
        **mlxq_env,
        "MLXQ_MODELS": models,
        "MLXQ_CPU_DEQUANTIZE": "false",
        "MLXQ_WORKER_CONCURRENCY": "2",
        **extra,
    }


def chat(api: str, model: str, tokens: int = 3, **extra: object) -> httpx.Response:
    body = {
        "model": model,
        "messages": QUESTION,
        "stream": False,
        "options": {"temperature": 0, "num_predict": tokens},
        **extra,
    }
    return httpx.post(f"{api}/api/chat", json=body, timeout=120)


def answered(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def loaded(api: str) -> dict[str, dict]:
    """/api/ps: model id -> its entry."""
    entries = httpx.get(f"{api}/api/ps", timeout=10).json()["models"]
    return {entry["model"].removesuffix(":latest"): entry for entry in entries}


def decisions(api: str) -> list[dict]:
    return httpx.get(f"{api}/fleet", timeout=10).json()["placement"]


def test_a_model_no_worker_holds_is_loaded_for_its_first_request(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    env = worker_env(mlxq_env, str(models / "models"))
    processes.worker(env)
    api = processes.api(env)
    copy = str(models / "models" / "copy")

    listed = {m["id"]: m for m in httpx.get(f"{api}/v1/models", timeout=10).json()["data"]}
    assert listed[copy]["state"] == "not-loaded" and listed["copy"]["root"] == copy
    assert listed[copy]["family"] == "llama" and listed[copy]["quantization"] == "Q4"
    assert listed[copy]["parameter_count"] > 100e6 and listed[copy]["context_length"] == 8192
    assert listed[DEMO_MODEL_ID]["state"] == "loaded"
    tags = {m["model"]: m for m in httpx.get(f"{api}/api/tags", timeout=10).json()["models"]}
    assert tags[f"{copy}:latest"]["size"] > 90e6
    assert tags[f"{copy}:latest"]["details"]["parameter_size"] == "134.52M"

    first = answered(chat(api, "copy"))  # by its short alias, not loaded: waits, not a 404
    assert first["message"]["content"]
    assert 0 < first["load_duration"] < first["total_duration"]
    ps = loaded(api)
    assert set(ps) == {DEMO_MODEL_ID, copy}
    assert ps[copy]["size"] > 90e6 and ps[copy]["context_length"] == 8192
    assert ps[DEMO_MODEL_ID]["expires_at"].startswith("2318")  # the default model stays
    assert not ps[copy]["expires_at"].startswith("2318")  # MLXQ_KEEP_ALIVE: 5 minutes

    body = {"model": "copy", "messages": QUESTION, "max_tokens": 2}
    again = httpx.post(f"{api}/v1/chat/completions", json=body, timeout=60)
    assert again.status_code == 200 and again.headers["x-mlxq-load-seconds"] == "0.000"

    assert answered(chat(api, "copy", keep_alive=0))["done"]  # answered, then unloaded
    wait_until(lambda: copy not in loaded(api), 10, "keep_alive 0 to unload the copy")
    assert DEMO_MODEL_ID in loaded(api)

    preload = httpx.post(f"{api}/api/generate", json={"model": "copy"}, timeout=60).json()
    assert preload["done_reason"] == "load" and preload["load_duration"] > 0
    assert copy in loaded(api)
    stop = httpx.post(f"{api}/api/generate", json={"model": "copy", "keep_alive": 0}).json()
    assert stop["done_reason"] == "unload"
    wait_until(lambda: copy not in loaded(api), 10, "ollama stop's request to unload it")


def test_an_idle_model_unloads_after_its_keep_alive_and_a_negative_one_keeps_it(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    env = worker_env(mlxq_env, str(models / "models"), MLXQ_KEEP_ALIVE="2s")
    processes.worker(env)
    api = processes.api(env)
    copy = str(models / "models" / "copy")
    answered(chat(api, "copy"))
    unloaded_at = time.monotonic()
    wait_until(lambda: copy not in loaded(api), 15, "the copy to unload after 2 s idle")
    assert time.monotonic() - unloaded_at >= 1.0
    assert DEMO_MODEL_ID in loaded(api)

    answered(chat(api, "copy", keep_alive=-1))
    time.sleep(4)
    assert loaded(api)[copy]["expires_at"].startswith("2318")


def test_a_budget_for_one_model_unloads_the_least_recently_used_idle_one_never_a_busy_one(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    env = worker_env(mlxq_env, str(models / "models"), MLXQ_MEMORY_BUDGET="150MB")
    processes.worker(env)
    api = processes.api(env)
    copy = str(models / "models" / "copy")

    answered(chat(api, "copy"))
    assert set(loaded(api)) == {copy}  # the demo model went to make room
    evicted = [d for d in decisions(api) if d["action"] == "unload"]
    assert evicted[0]["model"] == DEMO_MODEL_ID and "make room" in evicted[0]["reason"]

    big = time.monotonic()
    refused = chat(api, str(models / "models" / "big"))
    assert refused.status_code == 507 and "MLXQ_MEMORY_BUDGET" in refused.json()["error"]
    assert time.monotonic() - big < 5

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(chat, api, "copy", 24)
        wait_until(lambda: loaded(api)[copy]["workers"] and _running(api) > 0, 20, "busy")
        demo = answered(chat(api, DEMO_MODEL_ID))  # waits for the copy's job to end
        long = answered(busy.result())
    assert long["done_reason"] == "length" and long["eval_count"] == 24  # never cut short
    assert demo["load_duration"] > 0 and set(loaded(api)) == {DEMO_MODEL_ID}
    loads = [d for d in decisions(api) if d["action"] == "loaded" and d["model"] == DEMO_MODEL_ID]
    unloads = [d for d in decisions(api) if d["action"] == "unload" and d["model"] == copy]
    assert unloads and loads and unloads[0]["at"] <= loads[0]["at"]


def _running(api: str) -> int:
    return sum(w["running"] for w in httpx.get(f"{api}/fleet", timeout=10).json()["workers"])


def test_a_model_that_fails_to_load_answers_its_requests_at_once(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    env = worker_env(mlxq_env, str(models / "models"), MLXQ_QUEUE_TIMEOUT="60")
    processes.worker(env)
    api = processes.api(env)
    started = time.monotonic()
    first = chat(api, "broken")
    assert first.status_code == 500, first.text
    assert "no-such-arch" in first.json()["error"]
    assert time.monotonic() - started < 20  # the load's failure, not MLXQ_QUEUE_TIMEOUT
    started = time.monotonic()
    again = chat(api, "broken")
    assert again.status_code == 500 and "no-such-arch" in again.json()["error"]
    assert time.monotonic() - started < 2  # refused before it is queued
    assert answered(chat(api, DEMO_MODEL_ID))["message"]["content"]  # the worker is fine


def test_adapters_are_models_of_their_own_on_one_copy_of_the_base_weights(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    env = worker_env(mlxq_env, str(models / "adapters"))
    processes.worker(env)
    api = processes.api(env)
    answers = {
        name: answered(chat(api, name, tokens=6))["message"]["content"]
        for name in (DEMO_MODEL_ID, "lora-a", "lora-b")
    }
    assert len(set(answers.values())) == 3, answers  # each adapter changes the answer
    ps = loaded(api)
    base = ps[DEMO_MODEL_ID]["size"]
    adapter = ps[str(models / "adapters" / "lora-a")]["size"]
    assert base < adapter < base * 1.05  # its size counts the base it runs on...
    worker = httpx.get(f"{api}/fleet", timeout=10).json()["workers"][0]
    assert len(worker["held"]) == 3
    assert worker["memory_used"] < base * 1.1  # ...which is loaded once for all three


def test_two_workers_and_three_models_demand_decides_who_loads_what(
    processes: Processes, mlxq_env: dict[str, str], models: Path
) -> None:
    """Each worker's budget holds two of the three models (the demo model, ``copy``,
    ``copy-2``); both start with the demo model."""
    env = worker_env(
        mlxq_env,
        str(models / "models"),
        MLXQ_WORKER_CONCURRENCY="1",
        # Long enough that ``copy`` is still held when the crowd comes, on a loaded machine
        # too (at 6 s a slow load of copy-2 once let it expire: a third load, for a new need).
        MLXQ_KEEP_ALIVE="15s",
        MLXQ_MEMORY_BUDGET="220MB",
    )
    processes.worker(env)
    processes.worker(env)
    api = processes.api(env)
    copy, copy_2 = str(models / "models" / "copy"), str(models / "models" / "copy-2")

    answered(chat(api, "copy"))
    holders = _holders(api)
    assert len(holders[copy]) == 1  # one worker loads it, not every worker that may
    assert len(holders[DEMO_MODEL_ID]) == 2
    answered(chat(api, "copy-2"))
    holders = _holders(api)
    assert holders[copy_2] != holders[copy]  # the worker with room, not one that must evict

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        crowd = [pool.submit(chat, api, "copy", 12) for _ in range(6)]
        wait_until(lambda: len(_holders(api).get(copy, [])) == 2, 60, "a second copy")
        for future in crowd:
            answered(future.result())
    loads = [d for d in decisions(api) if d["action"] == "load" and d["model"] == copy]
    assert len(loads) == 2 and {d["worker"] for d in loads} == set(_holders(api)[copy])
    assert "beyond the free slots" in loads[0]["reason"]  # the newest first
    assert "wait and no worker holds it" in loads[1]["reason"]
    wait_until(lambda: copy not in _holders(api), 60, "idle copies to unload (keep-alive)")
    assert copy_2 not in _holders(api) and DEMO_MODEL_ID in _holders(api)


def _holders(api: str) -> dict[str, list[str]]:
    """Model -> the workers holding it."""
    holders: dict[str, list[str]] = {}
    for worker in httpx.get(f"{api}/fleet", timeout=10).json()["workers"]:
        for held in worker["held"]:
            holders.setdefault(held["model"], []).append(worker["name"])
    return holders
