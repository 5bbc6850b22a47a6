"""Fixtures: a real redis-server per test session, real mlxq processes on demand, and mlxq in
this process (the API app alone, or the app served on a thread with workers on threads). The
helpers they use live in tests/support/."""

import os
import resource
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.app import in_process_api
from tests.support.fleet import Fleet, in_process_fleet
from tests.support.http_clients import share_ssl_contexts
from tests.support.module_order import longest_modules_first
from tests.support.processes import Processes, Service
from tests.support.redis_server import RedisServer
from worker.cpu_backend import load_fast_blas

# Tests that run MLX in this process use the same BLAS as the workers they compare with.
load_fast_blas("auto")
# Every httpx.get/post of a test would otherwise parse the CA bundle first (~20 ms).
share_ssl_contexts()


def _import_mlx_lm_keeping_the_file_limit() -> None:
    """``mlx_lm.utils`` lowers its process's open-file limit to (2048, 4096) when imported.
    A test that runs MLX here imports it, and without the privilege to raise a hard limit
    again, every process this session starts afterwards would inherit 4096 (an API's
    connection budget comes from its open-file limit). So it is imported first, here, with
    the limit left as it is."""
    set_limit = resource.setrlimit
    resource.setrlimit = lambda *_: None  # type: ignore[assignment]
    try:
        import mlx_lm.utils  # noqa: F401
    finally:
        resource.setrlimit = set_limit


_import_mlx_lm_keeping_the_file_limit()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    longest_modules_first(items)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on a free port, in a temporary directory, for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run scripts/setup.sh (make test does)")
    with (
        tempfile.TemporaryDirectory(prefix="mlxq-redis-") as data_dir,
        RedisServer(Path(data_dir)) as server,
    ):
        yield server.url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis, emptied before and after each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Where the demo model is prepared; reused across runs (MLXQ_CACHE_DIR or ~/.cache/mlxq)."""
    return Path(os.environ.get("MLXQ_CACHE_DIR", Path.home() / ".cache" / "mlxq"))


@pytest.fixture(scope="session")
def demo_model(cache_dir: Path):
    """The demo model loaded in this process once per session, as a worker loads it
    (worker.model.load_model: float32 on the CPU), for tests that drive MLX directly."""
    from shared.settings import DEMO_MODEL_ID
    from worker.model import load_model

    return load_model(DEMO_MODEL_ID, cache_dir)


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


# -- the API in this process (tests/support/app.py) -------------------------------------------

QUEUE_TIMEOUT_S = 1.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api_client(anyio_backend: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API app on this test's Redis, inside its lifespan; no worker. Requests go straight
    to the ASGI app (no socket, no process). Default settings but a 1 s queue timeout: a
    request wrongly accepted fails its test in a second, not 30."""
    async with in_process_api(redis_url, queue_timeout=QUEUE_TIMEOUT_S) as api:
        yield api.client


@pytest.fixture
def make_api(anyio_backend: str, redis_url: str):
    """``async with make_api(**settings) as api`` (an InProcessApi): the app with other
    Settings fields (api_key, max_body_bytes, queue_timeout, ...) on this test's Redis."""

    def make(**settings: object):
        return in_process_api(redis_url, **settings)

    return make


@pytest.fixture
def make_fleet(redis_url: str):
    """``with make_fleet(workers=1, **settings) as fleet``: the API served on a thread
    (``fleet.api`` is its URL) and ``workers`` real RQ workers on threads, on this test's
    Redis, all with these Settings fields (engine="echo" unless given). No process starts:
    for what needs one (a kill, a pause, a log file, a start-up), use ``processes``."""

    def make(workers: int = 1, **settings: object):
        return in_process_fleet(redis_url, workers, **settings)

    return make


@pytest.fixture
def fleet(make_fleet) -> Iterator[Fleet]:
    """The API and one echo worker in this process, default settings (tests/support/fleet.py)."""
    with make_fleet() as started:
        yield started
