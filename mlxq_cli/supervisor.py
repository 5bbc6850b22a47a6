"""``mlxq up``: Redis (when none is reachable), the API, N workers and M embedding workers.

A small process supervisor for a single machine. It starts children, forwards Ctrl+C/SIGTERM
to them, and stops everything when one of them exits. For real deployments use the Procfile
or docker-compose.yml; this is the quick start.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from shared.redis_clients import is_reachable
from shared.settings import Settings, get_settings, without_password

STOP_MARGIN_S = 10.0
"""Beyond MLXQ_DRAIN_TIMEOUT, how long a stopping child gets for the rest of its exit (a
worker stops its engine and reporter and deregisters; the API closes its connections)."""
REDIS_START_TIMEOUT_S = 5.0
"""A local redis-server answers within milliseconds of starting."""
REDIS_STOP_TIMEOUT_S = 10.0
"""The Redis it started writes its append-only file and exits within this (the children,
stopped first, no longer write)."""
POLL_S = 0.05
"""How often the supervisor looks at its children and at the Redis it started."""
DEFAULT_REDIS_PORT = 6379


def _start_redis(settings: Settings) -> subprocess.Popen | None:
    if is_reachable(settings.redis_url):
        return None
    target = urlparse(settings.redis_url)
    if target.hostname not in ("127.0.0.1", "localhost", "::1"):
        where = without_password(settings.redis_url)
        sys.exit(f"mlxq up: Redis at {where} is unreachable (not starting a remote one).")
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("mlxq up: redis-server is not installed; run scripts/setup.sh first.")
    data_dir = Path(settings.cache_dir) / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = target.port or DEFAULT_REDIS_PORT
    print(f"mlxq up: starting redis-server on port {port} (data in {data_dir})")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            # A cap, and a policy that never evicts a queued job: when full, Redis refuses
            # writes and the API answers 503 until memory frees up.
            "--maxmemory",
            settings.redis_maxmemory,
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
        ]
    )
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if is_reachable(settings.redis_url):
            return process
        time.sleep(POLL_S)
    process.terminate()
    sys.exit("mlxq up: redis-server did not start")


def up(workers: int = 1, embedding_workers: int = 0) -> int:
    settings = get_settings()
    children: list[subprocess.Popen] = []
    redis_process = _start_redis(settings)
    mlxq = [sys.executable, "-m", "mlxq_cli"]
    children.append(subprocess.Popen([*mlxq, "api"]))
    shared = budget_env(settings, workers + embedding_workers)
    children.extend(
        subprocess.Popen([*mlxq, "worker"], env={**os.environ, **shared}) for _ in range(workers)
    )
    embedding_env = {**embedding_worker_env(settings), **shared}
    children.extend(
        subprocess.Popen([*mlxq, "worker"], env=embedding_env) for _ in range(embedding_workers)
    )
    embedding = (
        f" and {embedding_workers} embedding worker(s) for {settings.embedding_model}"
        if embedding_workers
        else ""
    )
    print(
        f"mlxq up: API on http://{settings.host}:{settings.port} (POST /ask), {workers} worker(s) "
        f"for {settings.model}{embedding}; the first start prepares the model. "
        "Ctrl+C stops everything."
    )
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        exited = [c for c in children if c.poll() is not None]
        if exited:
            exit_code = exited[0].returncode or 1
            print(f"mlxq up: {_name(exited[0])} exited ({exited[0].returncode}); stopping")
            break
        time.sleep(POLL_S)
    _stop_all(children, stop_timeout_s(settings))
    if redis_process is not None:
        _stop_all([redis_process], REDIS_STOP_TIMEOUT_S)
    return exit_code


def stop_timeout_s(settings: Settings) -> float:
    """How long children get to stop before they are killed: a worker may spend
    MLXQ_DRAIN_TIMEOUT finishing its running jobs, then STOP_MARGIN_S to exit."""
    return settings.drain_timeout + STOP_MARGIN_S


def budget_env(settings: Settings, workers: int) -> dict[str, str]:
    """Workers on one machine share its memory: without MLXQ_MEMORY_BUDGET, each gets an
    equal part of the default share (worker/memory.py), not the whole share each."""
    if settings.memory_budget is not None or workers < 1:
        return {}
    from worker.memory import DEFAULT_SHARE, physical_memory

    return {"MLXQ_MEMORY_BUDGET": str(int(physical_memory() * DEFAULT_SHARE / workers))}


def embedding_worker_env(settings: Settings) -> dict[str, str]:
    """An embedding worker's environment: the embedding model, on that model's own queue
    (MLXQ_QUEUE names the chat model's) and engine (chosen from the model)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLXQ_QUEUE", "MLXQ_ENGINE")}
    return {**env, "MLXQ_MODEL": settings.embedding_model}


def _name(child: subprocess.Popen) -> str:
    """The mlxq subcommand a child runs ("api", "worker"), from its argument list."""
    args = child.args
    return " ".join(str(a) for a in args[3:]) if isinstance(args, list) else str(args)


def _stop_all(processes: list[subprocess.Popen], timeout_s: float) -> None:
    """SIGTERM to each, then SIGKILL to any still running after ``timeout_s``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
