"""mlxq in the test's own process: the real API app served by uvicorn on a thread (real
sockets and HTTP framing, as ``mlxq api`` serves it, so the official sync clients work), and
real RQ workers (``worker.main.build_worker``: RQ's bookkeeping, the preparers, the reporter,
the cancel listener, the heartbeat) whose loops run on threads, on the test's real Redis, with
a test engine (worker/echo_engine.py, tests/support/engines.py) instead of a model.

Only the process boundary is left out: nothing here can be killed, paused or started as a
user starts it; the fault, fleet and end-to-end tests keep real processes for that
(tests/support/processes.py). A fleet starts in a few tens of milliseconds, against seconds
for two processes.
"""

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

from api.server import build_server
from shared import protocol
from shared.settings import Settings
from tests.support.processes import free_port, wait_until
from worker.main import build_worker
from worker.rq_worker import BatchingWorker

START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 30
"""A worker's stop waits for its running jobs (MLXQ_DRAIN_TIMEOUT) before it gives up."""


def settings_for(redis_url: str, **fields: Any) -> Settings:
    """``Settings`` on ``redis_url`` with ``fields`` (engine="echo", queue_timeout=2, ...);
    the rest are the defaults a user gets."""
    return Settings(redis_url=redis_url, **fields)


class WorkerThread:
    """A real ``BatchingWorker`` serving on a thread of this process (no signal handlers:
    ``stop`` asks it to stop the way SIGTERM does, and waits for it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker: BatchingWorker = build_worker(settings)
        self.name = self.worker.name
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, name=f"mlxq-worker-{self.name[:8]}", daemon=True
        )

    def _work(self) -> None:
        try:
            self.worker.work(logging_level=self.settings.log_level, handle_signals=False)
        except BaseException as exc:  # seen by stop(), which fails the test
            self.error = exc
            raise

    def start(self) -> "WorkerThread":
        """Returns once the worker's first heartbeat is in Redis: it is taking jobs."""
        client = self.worker.connection
        self._thread.start()

        def registered() -> bool:
            assert self._thread.is_alive(), f"the worker thread died: {self.error!r}"
            return client.zscore(protocol.LIVE_WORKERS, self.name) is not None

        wait_until(registered, START_TIMEOUT_S, "the worker thread to register", interval=0.01)
        return self

    def stop(self) -> None:
        """Stop taking jobs, finish the running ones, deregister: SIGTERM's path. A dequeue
        blocked in Redis (up to a second) is woken at once."""
        self.worker.stop_after_running_jobs()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            _unblock(self.worker.connection, self.name)
            self._thread.join(0.05)
        assert not self._thread.is_alive(), f"worker {self.name} did not stop"
        self.worker.connection.connection_pool.disconnect()  # a process would exit here
        assert self.error is None, f"worker {self.name} failed: {self.error!r}"


def _unblock(connection: redis.Redis, worker: str) -> None:
    """``CLIENT UNBLOCK`` the worker's connections: a blocking dequeue returns as if it had
    timed out, and the loop sees its stop request."""
    name = protocol.worker_connection_name(worker)
    with contextlib.suppress(redis.RedisError):
        for client in connection.client_list():
            if client.get("name") == name and client.get("cmd") in ("blpop", "blmove"):
                connection.client_unblock(int(client["id"]))


class ApiThread:
    """``create_app(settings)`` served by uvicorn on a free port, on a thread, inside its
    lifespan, as ``mlxq api`` serves it (api/server.py: the edge's HTTP limits)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"port": free_port()})
        self.server = build_server(self.settings)
        self.app = self.server.config.app
        self.base_url = f"http://127.0.0.1:{self.settings.port}"
        self._thread = threading.Thread(target=self.server.run, name="mlxq-api", daemon=True)

    def start(self) -> "ApiThread":
        self._thread.start()

        def started() -> bool:
            assert self._thread.is_alive(), "the API thread ended: see the log"
            return self.server.started

        wait_until(started, START_TIMEOUT_S, "the API thread", interval=0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        assert not self._thread.is_alive(), "the API thread did not stop"


class Fleet:
    """An API and workers in this process, on one Redis; ``fleet.api`` is its base URL.
    Start more workers (of other models or engines) with ``worker(**fields)``."""

    def __init__(self, redis_url: str, **fields: Any) -> None:
        self.redis_url = redis_url
        self.settings = settings_for(redis_url, **fields)
        self.workers: list[WorkerThread] = []
        self._fields = fields
        self._api: ApiThread | None = None

    @property
    def api(self) -> str:
        if self._api is None:
            self._api = ApiThread(self.settings).start()
        return self._api.base_url

    def worker(self, **fields: Any) -> WorkerThread:
        """A worker with this fleet's settings, ``fields`` changed (model="model-b", ...)."""
        started = WorkerThread(settings_for(self.redis_url, **{**self._fields, **fields})).start()
        self.workers.append(started)
        return started

    def stop(self) -> None:
        try:
            for worker in self.workers:
                worker.stop()
        finally:
            if self._api is not None:
                self._api.stop()


@contextlib.contextmanager
def in_process_fleet(redis_url: str, workers: int = 1, **fields: Any) -> Iterator[Fleet]:
    """``workers`` workers (the echo engine unless ``engine=`` says otherwise) and, when a
    test first asks for ``fleet.api``, the API; all stopped at the end."""
    fields.setdefault("engine", "echo")
    fleet = Fleet(redis_url, **fields)
    try:
        for _ in range(workers):
            fleet.worker()
        yield fleet
    finally:
        fleet.stop()
