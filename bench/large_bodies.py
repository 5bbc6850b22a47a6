"""How much three clients looping 1 MB prompts slow everyone else's small requests.

An API and an echo worker (no model: only mlxq's own cost), Redis on loopback. A probe client
(127.0.0.1) sends small ``/ask`` requests one after another, first alone, then while three
flood clients (127.0.0.2) each loop 1 MB prompts. Prints the probe's latencies both ways and
what the flood got. ``--tree`` runs the API and worker of another checkout (the same test
against the code before a change).

    .venv/bin/python bench/large_bodies.py [--tree /path/to/checkout] [--probes 40]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import free_port, wait_until  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

FLOOD_CLIENTS = 3
PROMPT = "word " * 200_000  # 1 MB
SMALL = {"question": "one two", "max_tokens": 2}


def start(tree: Path, command: str, env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    log = open(log_dir / f"{command}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "mlxq_cli", command],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def probe(api: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(base_url=api, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post("/ask", json=SMALL)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.05)
    return latencies


def flood(api: str, stop: threading.Event, statuses: Counter) -> None:
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=api, transport=transport, timeout=60) as client:
        while not stop.is_set():
            response = client.post("/ask", json={"question": PROMPT, "max_tokens": 1})
            statuses[response.status_code] += 1
            if response.status_code == 429:
                time.sleep(float(response.headers.get("retry-after", "1")))


def summary(latencies: list[float]) -> str:
    ms = sorted(1000 * x for x in latencies)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"p50 {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--probes", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as redis_server:
        port = free_port()
        env = {
            "MLXQ_REDIS_URL": redis_server.url,
            "MLXQ_ENGINE": "echo",
            "MLXQ_WORKER_CONCURRENCY": "16",
            "MLXQ_PORT": str(port),
            "MLXQ_LOG_LEVEL": "WARNING",
        }
        processes = [start(args.tree, name, env, Path(tmp)) for name in ("worker", "api")]
        api = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(api), 30, "the API and worker")
            idle = probe(api, args.probes)
            stop, statuses = threading.Event(), Counter[int]()
            floods = [
                threading.Thread(target=flood, args=(api, stop, statuses))
                for _ in range(FLOOD_CLIENTS)
            ]
            for thread in floods:
                thread.start()
            time.sleep(2)
            flooded_at = time.monotonic()
            busy = probe(api, args.probes)
            seconds = time.monotonic() - flooded_at
            stop.set()
            for thread in floods:
                thread.join(60)
        finally:
            for process in processes:
                process.terminate()
                process.wait(20)
    print(f"tree: {args.tree}")
    print(f"probe alone:       {summary(idle)}")
    print(f"probe with flood:  {summary(busy)}")
    print(f"slowdown (p50):    {statistics.median(busy) / statistics.median(idle):.2f}x")
    print(f"flood answers:     {dict(statuses)} in {seconds + 2:.0f} s")


def _answers(api: str) -> bool:
    try:
        return httpx.post(f"{api}/ask", json=SMALL, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
