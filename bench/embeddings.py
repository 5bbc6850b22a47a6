"""Embeddings/s of the embedding engine at batch 1 and 32, on the demo embedding model.

Runs the real EmbeddingEngine in this process (its own thread, as in a worker): batch 1 is
one single-input job at a time; batch 32 is 32 single-input jobs submitted together, which
the engine pools into one forward pass (what concurrent requests get), and one job of 32
inputs. The same 32 sentences (the 8 of bench/embedding_reference.py, 3 to 25 tokens) in
every case.

    .venv/bin/python -m bench.embeddings [--seconds 5]
"""

import argparse
import os
import platform
import queue
import time
from pathlib import Path
from typing import Any

from shared.schemas import EmbeddingRequest
from shared.settings import DEMO_EMBEDDING_MODEL_ID, Settings
from worker.cpu_backend import load_fast_blas

from .embedding_reference import SENTENCES


def _run(engine: Any, outputs: "queue.Queue[Any]", jobs: list[list]) -> int:
    """Submit the jobs together, wait for all; returns the inputs embedded."""
    for i, inputs in enumerate(jobs):
        request = EmbeddingRequest(
            request_id=str(i), model=DEMO_EMBEDDING_MODEL_ID, inputs=inputs, deadline=2e9
        )
        engine.submit(engine.prepare(f"j{i}", request, 60))
    for _ in jobs:
        assert outputs.get(timeout=60).embeddings is not None
    return sum(len(inputs) for inputs in jobs)


def measure(
    engine: Any, outputs: "queue.Queue[Any]", rounds: list[list[list]], seconds: float
) -> float:
    """Embeddings/s over ``rounds`` repeated: each round's jobs are submitted together."""
    for jobs in rounds:  # warm-up
        _run(engine, outputs, jobs)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        done += sum(_run(engine, outputs, jobs) for jobs in rounds)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    load_fast_blas("auto")  # as a worker does, before MLX is imported
    import mlx.core as mx

    from worker.embedding_engine import EmbeddingEngine

    cache = Path(os.environ.get("MLXQ_CACHE_DIR", Path.home() / ".cache" / "mlxq"))
    outputs: queue.Queue[Any] = queue.Queue()
    engine = EmbeddingEngine(Settings(model=DEMO_EMBEDDING_MODEL_ID, cache_dir=cache), outputs.put)
    engine.start()
    sentences = (SENTENCES * 4)[:32]
    cases = {
        "batch 1 (one request, one input, at a time)": [[[s]] for s in sentences],
        "batch 32 (32 one-input requests, pooled)": [[[s] for s in sentences]],
        "batch 32 (one request of 32 inputs)": [[sentences]],
    }
    print(f"device: {mx.default_device()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print("| case | embeddings/s |\n|---|---|")
    for name, jobs in cases.items():
        print(f"| {name} | {measure(engine, outputs, jobs, args.seconds):.0f} |")
    engine.stop()


if __name__ == "__main__":
    main()
