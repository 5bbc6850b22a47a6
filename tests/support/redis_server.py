"""The one way tests and benchmarks start a real ``redis-server``.

A server runs on a free port (or a given one) with its data in its own directory, answers
before ``start`` returns, and can be stopped and started again on the same port and data
(with ``appendonly=True`` its queued jobs survive that). Password, TLS and extra bind
addresses are options; ``prefix`` runs it under another command (``ip netns exec <ns>``).

Nothing here imports pytest: bench/procs.py starts its Redis with ``RedisServer`` too.
"""

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote

import redis

from tests.support.processes import free_port, wait_until

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class RedisServerError(RuntimeError):
    """redis-server is not installed, or stopped before it answered (the message has its log)."""


@dataclass(frozen=True)
class Tls:
    """Files for a TLS-only server: clients verify it against ``ca``; no client certificates."""

    cert: Path
    key: Path
    ca: Path


class RedisServer:
    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        tls: Tls | None = None,
        bind: Sequence[str] = ("127.0.0.1",),
        options: Sequence[str] = (),
        prefix: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        """``options``: more ``--name value`` arguments, after the ones made here (they win).
        ``log_path``: its stdout and stderr, appended across restarts (default: in data_dir)."""
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.password = password
        self.tls = tls
        self.bind = tuple(bind)
        self.options = tuple(options)
        self.prefix = tuple(prefix)
        self.log_path = log_path if log_path is not None else data_dir / "redis-server.log"
        self.process: subprocess.Popen | None = None
        self._log: IO[str] | None = None

    # -- where it is --------------------------------------------------------------------------

    def url_at(self, host: str, db: int = 0) -> str:
        """A URL of this server through ``host`` (one of its bind addresses)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password is not None else ""
        query = f"?ssl_ca_certs={quote(str(self.tls.ca))}" if self.tls else ""
        return f"{scheme}://{auth}{host}:{self.port}/{db}{query}"

    def url_for(self, db: int) -> str:
        return self.url_at(self.bind[0], db)

    @property
    def url(self) -> str:
        """Database 0, through the first bind address (127.0.0.1 unless told otherwise)."""
        return self.url_for(0)

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server was never started"
        return self.process.pid

    # -- starting and stopping ----------------------------------------------------------------

    def argv(self) -> list[str]:
        server = shutil.which("redis-server")
        if server is None:
            raise RedisServerError("redis-server is not installed (scripts/setup.sh installs it)")
        argv = [server, "--bind", *self.bind, "--dir", str(self.data_dir), "--save", ""]
        if self.tls is None:
            argv += ["--port", str(self.port)]
        else:
            argv += ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            argv += ["--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no"]
        argv += ["--appendonly", "yes" if self.appendonly else "no"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return [*self.prefix, *argv, *self.options]

    def start(self, wait: bool = True, timeout: float = START_TIMEOUT_S) -> None:
        """Start it; with ``wait``, return once it answers PING (RedisServerError if it exits
        first). ``wait=False`` where it cannot be reached from here (another namespace)."""
        assert not self.running, "already running"
        argv = self.argv()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a")  # noqa: SIM115
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            try:
                wait_until(self._answers, timeout, f"redis-server on port {self.port}")
            except BaseException:
                self.stop()
                raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Redis shuts down cleanly: the append-only file is complete), then wait;
        SIGKILL if it does not exit in time. Does nothing when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop and start again, on the same port and data directory."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, db: int = 0, **options: object) -> redis.Redis:
        return redis.Redis.from_url(self.url_for(db), **options)  # type: ignore[arg-type]

    def reachable(self) -> bool:
        """It runs and answers PING now."""
        if not self.running:
            return False
        try:
            client = self.client(socket_connect_timeout=0.2, socket_timeout=1)
            with client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RedisServerError(
                f"redis-server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
            )
        return self.reachable()

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
