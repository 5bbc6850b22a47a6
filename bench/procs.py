"""Starting and stopping the processes a benchmark talks to, all on 127.0.0.1.

Every wait here is bounded, and every process started is stopped by ``Processes.stop_all``
(the benchmark must end by itself, whatever fails).
"""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import redis

from tests.support.processes import ROOT, free_port, wait_until
from tests.support.redis_server import RedisServer

__all__ = ["ROOT", "POLL_S", "Processes", "free_port", "wait_until"]


POLL_S = 0.02
"""How often a wait here looks again (worker start-up is timed: see bench/overhead.py)."""


class Processes:
    """Owns the benchmark's child processes; each one logs to its own file in ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[tuple[str, subprocess.Popen]] = []
        self.redis: RedisServer | None = None
        self.redis_process: subprocess.Popen | None = None

    def start(
        self, name: str, argv: list[str], env: dict[str, str], stdin: int | None = None
    ) -> subprocess.Popen:
        log_path = self.log_dir / f"{len(self._started):02d}-{name}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                stdin=stdin,
                stdout=subprocess.PIPE if stdin is not None else log,
                stderr=log,
                text=True,
            )
        process.log_path = log_path  # type: ignore[attr-defined]
        self._started.append((name, process))
        return process

    def check_alive(self, process: subprocess.Popen) -> None:
        if process.poll() is not None:
            log = Path(process.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{log}")

    def stop(self, process: subprocess.Popen, timeout: float = 20) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def stop_all(self) -> None:
        for _, process in reversed(self._started):
            self.stop(process)
        self._started.clear()
        if self.redis is not None:  # started first, stopped last
            self.redis.stop()

    # -- the kinds of process the benchmark uses --------------------------------------------

    def redis_server(self, data_dir: Path) -> str:
        """A private redis-server (tests/support/redis_server.py: the tests start theirs the
        same way), logging to this run's log directory; stopped by ``stop_all``."""
        log_path = self.log_dir / f"{len(self._started):02d}-redis.log"
        self.redis = RedisServer(data_dir, log_path=log_path)
        self.redis.start()
        self.redis_process = self.redis.process
        return self.redis.url

    def mlxq_api(self, env: dict[str, str]) -> tuple[str, subprocess.Popen]:
        port = free_port()
        process = self.start(
            "mlxq-api",
            [sys.executable, "-m", "mlxq_cli", "api"],
            env
            | {
                "MLXQ_HOST": "127.0.0.1",
                "MLXQ_PORT": str(port),
            },
        )
        base_url = f"http://127.0.0.1:{port}"
        self.wait_http(process, f"{base_url}/health", 30, "the mlxq API")
        return base_url, process

    def mlxq_worker(
        self, env: dict[str, str], timeout: float = 180, cpus: str | None = None
    ) -> subprocess.Popen:
        """cpus: pin the worker (taskset -c, which execs it: the pid stays the worker's)."""
        client = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
        before = client.scard("rq:workers")
        argv = [sys.executable, "-m", "mlxq_cli", "worker"]
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        process = self.start("mlxq-worker", argv, env)

        def registered() -> bool:
            self.check_alive(process)
            return client.scard("rq:workers") > before

        wait_until(registered, timeout, "the mlxq worker to register", POLL_S)
        return process

    def rq_worker(self, redis_url: str, queue: str) -> subprocess.Popen:
        client = redis.Redis.from_url(redis_url)
        before = client.scard("rq:workers")
        argv = [sys.executable, "-m", "bench.rq_baseline", redis_url, queue]
        process = self.start("rq-simpleworker", argv, {})

        def registered() -> bool:
            self.check_alive(process)
            return client.scard("rq:workers") > before

        wait_until(registered, 60, "the bare RQ worker to register", POLL_S)
        return process

    def mlx_lm_server(
        self, model: Path, env: dict[str, str], concurrency: int, extra: tuple[str, ...] = ()
    ) -> tuple[str, subprocess.Popen]:
        """``extra``: more of its flags (e.g. ``--draft-model``)."""
        port = free_port()
        argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model)]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        argv += ["--decode-concurrency", str(concurrency), "--log-level", "WARNING", *extra]
        process = self.start("mlx_lm-server", argv, env)
        base_url = f"http://127.0.0.1:{port}"
        self.wait_http(process, f"{base_url}/v1/models", 180, "mlx_lm.server")
        return base_url, process

    def wait_http(self, process: subprocess.Popen, url: str, timeout: float, what: str) -> None:
        def healthy() -> bool:
            self.check_alive(process)
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, what, POLL_S)
