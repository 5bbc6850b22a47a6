"""Fixtures: a real redis-server per test session, and real mlxq processes on demand."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from shared.keys import LIVE_WORKERS
from worker.cpu_backend import load_fast_blas

# Tests that run MLX in this process use the same BLAS as the workers they compare with.
load_fast_blas("auto")

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on a free port, in a temporary directory, for the whole session."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: run scripts/setup.sh (make test does)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlxq-redis-") as data_dir:
        process = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                data_dir,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)

        def reachable() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(reachable, 10, "redis-server")
        yield url
        process.terminate()
        process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, emptied before and after each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where the demo model is prepared; reused across runs (MLXQ_CACHE_DIR or ~/.cache/mlxq)."""
    return Path(os.environ.get("MLXQ_CACHE_DIR", Path.home() / ".cache" / "mlxq"))


class Processes:
    """Starts ``mlxq`` subcommands as real processes and stops them after the test."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._started: list[subprocess.Popen] = []

    def start(self, command: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(self._tmp_path / f"{command}-{len(self._started)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "mlxq_cli", command],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log_path = log.name  # type: ignore[attr-defined]
        self._started.append(process)
        return process

    def api(self, env: dict[str, str]) -> str:
        port = free_port()
        process = self.start("api", {**env, "MLXQ_PORT": str(port)})
        base_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, Path(process.log_path).read_text()
            try:
                return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 20, "the API")
        return base_url

    def worker(self, env: dict[str, str], timeout: float = 120) -> subprocess.Popen:
        client = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
        before = client.zcard(LIVE_WORKERS)
        process = self.start("worker", env)

        def registered() -> bool:  # its first heartbeat: it is taking jobs
            assert process.poll() is None, Path(process.log_path).read_text()
            return client.zcard(LIVE_WORKERS) > before

        wait_until(registered, timeout, "the worker to register")
        return process

    def stop_all(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.terminate()
        for process in self._started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.fixture
def mlxq_env(redis_url: str, cache_dir: Path) -> dict[str, str]:
    """Environment for mlxq processes that talk to this test's Redis."""
    return {
        "MLXQ_REDIS_URL": redis_url,
        "MLXQ_CACHE_DIR": str(cache_dir),
        "MLXQ_LOG_LEVEL": "INFO",
    }


class Service:
    """A running API and one real worker with the demo model."""

    def __init__(self, base_url: str, redis_url: str, model_path: Path) -> None:
        self.base_url = base_url
        self.redis_url = redis_url
        self.model_path = model_path


@pytest.fixture(scope="session")
def model_service(
    redis_server: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One real service for the whole session, on its own Redis database (tests that flush
    database 0 do not disturb it). The first run prepares the demo model."""
    from worker.demo_model import prepare_demo_model

    redis_url = redis_server.rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "MLXQ_REDIS_URL": redis_url,
        "MLXQ_CACHE_DIR": str(cache_dir),
        "MLXQ_WORKER_CONCURRENCY": "8",
        "MLXQ_MAX_TOKENS_CAP": "100000",
    }
    model_path = prepare_demo_model(cache_dir)
    processes = Processes(tmp_path_factory.mktemp("service"))
    processes.worker(env, timeout=600)
    yield Service(processes.api(env), redis_url, model_path)
    processes.stop_all()
