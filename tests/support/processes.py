"""Real mlxq processes for tests: ``python -m mlxq_cli api|worker`` (or an installed ``mlxq``
script), free ports, bounded waits.

Nothing here imports pytest: bench/procs.py uses ``free_port`` and ``wait_until`` too.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
import redis

from shared.protocol import LIVE_WORKERS

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root: the working directory of every process started here."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports free now (the ring backend's ranks listen on
    consecutive ports)."""
    for _ in range(100):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            for port in range(first + 1, first + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports")


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """The process of each rank a launcher started: rank -> pid (from /proc)."""
    pids = {}
    for child in Path("/proc").glob("[0-9]*"):
        try:
            stat = (child / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != launcher.pid:
                continue
            environ = (child / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        for entry in environ:
            if entry.startswith(b"MLX_RANK="):
                pids[int(entry.split(b"=", 1)[1])] = int(child.name)
    return pids


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` every ``interval`` seconds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def without_pythonpath(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less ``PYTHONPATH``: a process started with it imports what is installed."""
    return {name: value for name, value in env.items() if name != "PYTHONPATH"}


class Processes:
    """Starts ``mlxq`` subcommands as real processes and stops them after the test.

    By default they run this checkout's code (``python -m mlxq_cli`` in the repository root,
    ``PYTHONPATH`` set to it). With ``program`` (an installed ``mlxq`` script) they run in
    ``tmp_path`` with ``PYTHONPATH`` unset, so they import only what was installed."""

    def __init__(self, tmp_path: Path, program: Path | None = None) -> None:
        self._tmp_path = tmp_path
        self._program = program
        self._started: list[subprocess.Popen] = []

    def start(
        self,
        command: str,
        env: dict[str, str],
        launcher: list[str] | None = None,
        args: list[str] | None = None,
    ) -> subprocess.Popen:
        """``mlxq <command> [args]``; with ``launcher``, started by it (``mlx.launch ...``)."""
        log = open(self._tmp_path / f"{command}-{len(self._started)}.log", "w")  # noqa: SIM115
        if self._program is None:
            argv = [sys.executable, "-m", "mlxq_cli", command]
            cwd, base_env = ROOT, {**os.environ, "PYTHONPATH": str(ROOT)}
        else:
            argv = [str(self._program), command]
            cwd, base_env = self._tmp_path, without_pythonpath(os.environ)
        argv += args or []
        if launcher is not None:  # it takes the interpreter apart from the command
            argv = [*launcher, "--python", argv[0], *argv[1:]]
        process = subprocess.Popen(
            argv, cwd=cwd, env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT
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

    def group(
        self, env: dict[str, str], ranks: int = 2, timeout: float = 180, shortcut: bool = False
    ) -> subprocess.Popen:
        """A worker group: ``ranks`` local ranks of ``mlxq worker`` started by MLX's own
        launcher over its ring backend (on free ports), or by ``mlxq group`` (``shortcut``);
        returns the launcher once rank 0 takes jobs."""
        port = str(free_ports(ranks))
        client = redis.Redis.from_url(env["MLXQ_REDIS_URL"])
        before = client.zcard(LIVE_WORKERS)
        if shortcut:  # mlxq group execs MLX's launcher: the process is the launcher
            process = self.start("group", env, args=["-n", str(ranks), "--starting-port", port])
        else:
            launch = str(Path(sys.executable).with_name("mlx.launch"))
            launcher = [launch, "--backend", "ring", "-n", str(ranks), "--starting-port", port]
            process = self.start("worker", env, launcher)

        def registered() -> bool:
            assert process.poll() is None, Path(process.log_path).read_text()
            return client.zcard(LIVE_WORKERS) > before

        wait_until(registered, timeout, "the worker group to register")
        process.rank_pids = rank_pids(process)  # type: ignore[attr-defined]
        return process

    def stop_all(self) -> None:
        for process in self._started:
            for pid in getattr(process, "rank_pids", {}).values():  # the launcher leaves them
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if process.poll() is None:
                process.terminate()
        for process in self._started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


class Service:
    """A running API and one real worker with the demo model."""

    def __init__(self, base_url: str, redis_url: str, model_path: Path) -> None:
        self.base_url = base_url
        self.redis_url = redis_url
        self.model_path = model_path
