"""Section (l): models on demand. Time to first token for a model no worker holds (its load
included) and for a loaded one; and requests alternating between two models on one worker,
against mlx_lm.server given the same two models (it holds one model at a time, so it loads
again at every switch).

Both systems load the same two float32 folders (the demo model's float32 copy, and a second
folder hard-linking the same files under another name: another model to both, the same
weights and speed). mlxq: one worker, MLXQ_MODEL the first and MLXQ_MODELS the second, its
default memory budget (both fit). mlx_lm.server: started with the first; each request names
its model's folder, as mlx_lm.server takes it.
"""

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import trange

from bench.stats import median, percentile, spread, table

MAX_TOKENS = 8
QUESTION = "What is machine learning?"
ALTERNATIONS = 6
"""Requests per system per round, alternating between the two models (A B A B A B)."""
PAUSE_S = 0.2
UNLOAD_TIMEOUT_S = 30.0


@dataclass
class SwitchResult:
    cold_ttft_ms: list[float] = field(default_factory=list)  # one per round
    cold_load_ms: list[float] = field(default_factory=list)  # the worker's load_duration
    warm_ttft_ms: list[float] = field(default_factory=list)
    mlxq_alt_ms: list[float] = field(default_factory=list)  # per round: median TTFT
    server_alt_ms: list[float] = field(default_factory=list)
    mlxq_alt_total_ms: list[float] = field(default_factory=list)  # per round: median request
    server_alt_total_ms: list[float] = field(default_factory=list)
    mlxq_samples: list[float] = field(default_factory=list)  # every alternating request's TTFT
    server_samples: list[float] = field(default_factory=list)


def second_model(model: Path) -> Path:
    """``model``'s files under another folder name (hard links): a second model."""
    target = model.parent / f"{model.name}-second"
    target.mkdir(exist_ok=True)
    for file in model.iterdir():
        if file.is_file() and not (target / file.name).exists():
            os.link(file, target / file.name)
    return target


def _stream(client: httpx.Client, model: str) -> tuple[float, float]:
    """One streamed OpenAI chat request: (seconds to its first content, seconds in all)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first is None and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if delta.get("content"):
                    first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


def _cold(client: httpx.Client, model: str) -> tuple[float, float]:
    """A streamed Ollama chat request: (seconds to its first content, load_duration s)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "options": {"temperature": 0, "num_predict": MAX_TOKENS},
    }
    started = time.perf_counter()
    first, load_s = None, 0.0
    with client.stream("POST", "/api/chat", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            piece = json.loads(line)
            if first is None and piece.get("message", {}).get("content"):
                first = time.perf_counter() - started
            if piece.get("done"):
                load_s = piece["load_duration"] / 1e9
    return (first if first is not None else time.perf_counter() - started), load_s


def _unload(client: httpx.Client, model: str) -> None:
    """Ollama's stop request, then wait until no worker holds the model."""
    client.post("/api/generate", json={"model": model, "keep_alive": 0}).raise_for_status()
    deadline = time.monotonic() + UNLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        names = [m["model"] for m in client.get("/api/ps").json()["models"]]
        if f"{model}:latest" not in names:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{model} was not unloaded within {UNLOAD_TIMEOUT_S:g} s")


def run_switch(
    mlxq_url: str, server_url: str, models: tuple[Path, Path], rounds: int
) -> SwitchResult:
    a, b = (str(m) for m in models)
    result = SwitchResult()
    with (
        httpx.Client(base_url=mlxq_url, timeout=600) as mlxq,
        httpx.Client(base_url=server_url, timeout=600) as server,
    ):
        _stream(mlxq, a), _stream(server, a)  # warm-up: first-call allocations
        for round_index in trange(rounds, desc="(l) models on demand", unit="round", leave=False):
            _unload(mlxq, b)
            time.sleep(PAUSE_S)
            cold, load_s = _cold(mlxq, b)
            result.cold_ttft_ms.append(cold * 1000)
            result.cold_load_ms.append(load_s * 1000)
            time.sleep(PAUSE_S)
            result.warm_ttft_ms.append(_cold(mlxq, b)[0] * 1000)
            systems = [("mlxq", mlxq), ("server", server)]
            for name, client in systems if round_index % 2 == 0 else systems[::-1]:
                firsts, totals = [], []
                for i in range(ALTERNATIONS):
                    time.sleep(PAUSE_S)
                    first, total = _stream(client, a if i % 2 == 0 else b)
                    firsts.append(first * 1000)
                    totals.append(total * 1000)
                if name == "mlxq":
                    result.mlxq_alt_ms.append(median(firsts))
                    result.mlxq_alt_total_ms.append(median(totals))
                    result.mlxq_samples += firsts
                else:
                    result.server_alt_ms.append(median(firsts))
                    result.server_alt_total_ms.append(median(totals))
                    result.server_samples += firsts
    return result


def render(result: SwitchResult, rounds: int) -> tuple[str, list[list[str]]]:
    ratio = median(result.server_alt_ms) / median(result.mlxq_alt_ms)
    total_ratio = median(result.server_alt_total_ms) / median(result.mlxq_alt_total_ms)
    rows = [
        [
            "mlxq: first request for a model no worker holds (load included)",
            spread(result.cold_ttft_ms),
            f"load_duration {spread(result.cold_load_ms)}",
        ],
        ["mlxq: the next request for it (loaded)", spread(result.warm_ttft_ms), ""],
        [
            "mlxq: alternating A, B, A, B... (both held)",
            spread(result.mlxq_alt_ms),
            f"request {spread(result.mlxq_alt_total_ms)}; p90 first token "
            f"{percentile(result.mlxq_samples, 90):.0f}",
        ],
        [
            "mlx_lm.server: alternating A, B, A, B... (reloads)",
            spread(result.server_alt_ms),
            f"request {spread(result.server_alt_total_ms)}; p90 first token "
            f"{percentile(result.server_samples, 90):.0f}",
        ],
    ]
    summary = [
        [
            "(l) alternating two models: mlx_lm.server's first token / mlxq's",
            "> 1 (mlxq keeps both loaded)",
            f"{ratio:.1f}x ({median(result.server_alt_ms):.0f} vs "
            f"{median(result.mlxq_alt_ms):.0f} ms)",
            "**met**" if ratio > 1 else "**missed**",
        ],
    ]
    parts = [
        "## (l) Models on demand",
        "",
        f"One worker, two models (A: the float32 copy of the demo model; B: the same files in "
        f"another folder, another model to both systems). In each of {rounds} rounds: B is "
        "unloaded (Ollama's `keep_alive: 0` request), then asked for once cold and once warm "
        f"(streamed `/api/chat`, greedy, {MAX_TOKENS} tokens); then {ALTERNATIONS} streamed "
        "`/v1/chat/completions` requests alternate A, B, A, B... on mlxq and on mlx_lm.server "
        "(started with A; each request names its model's folder), the two systems' order "
        "alternating between rounds. Times are to the first streamed token, ms: median "
        "(min-max) over rounds of each round's median.",
        "",
        table(["request", "first token, ms", "also"], rows),
        "",
        f"- Alternating two models: mlx_lm.server takes **{ratio:.1f}x** mlxq's time to the "
        f"first token, **{total_ratio:.1f}x** its time per request.",
        "",
        ABOUT_L,
        "",
    ]
    return "\n".join(parts), summary


ABOUT_L = """\
**What this shows.** A cold request's time is the placement (a worker looks for demand four
times a second and claims the load), the load on the loader thread (weights read, evaluated
layer by layer, and one small forward pass so that MLX's first-call work is the load's, not
the first request's) and the prefill; its `load_duration` is the load's part, what Ollama's
clients see of it. Once loaded, a model answers like any other. mlx_lm.server holds one
model: every switch drops it and loads the other (its `ModelProvider.load`), so alternating
requests pay a load each;
mlxq holds both within its memory budget (about 1.1 GB here) and pays nothing. With a budget
for one model only, mlxq would unload and load as well: the least recently used idle model
goes, and the table's cold row is then the cost of each switch."""
