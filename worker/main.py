"""``mlxq worker``: load the model once, then serve jobs from the model's queue until stopped."""

import importlib
import logging
import sys

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.redis_clients import worker_client
from shared.settings import Settings, get_settings, without_password
from worker.cpu_backend import load_fast_blas
from worker.engine_api import Emit, Engine, EngineFactory
from worker.errors import ModelLoadError
from worker.reporter import Outbox
from worker.rq_worker import BatchingWorker

log = logging.getLogger("mlxq.worker")


def engine_factory(name: str) -> EngineFactory:
    """The engine MLXQ_ENGINE names: 'mlx', 'echo', or 'module:Class'."""
    if name == "mlx":
        from worker.mlx_engine import MLXEngine

        return MLXEngine
    if name == "echo":
        from worker.echo_engine import EchoEngine

        return EchoEngine
    module_name, _, class_name = name.partition(":")
    try:
        factory: EngineFactory = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelLoadError(f"MLXQ_ENGINE={name!r} cannot be loaded: {exc}") from exc
    return factory


def build_engine(settings: Settings, emit: Emit) -> Engine:
    return engine_factory(settings.engine)(settings, emit)


def connect(settings: Settings) -> redis.Redis:
    connection = worker_client(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise ModelLoadError(
            f"Cannot reach Redis at {without_password(settings.redis_url)}: {exc}"
        ) from exc
    return connection


def build_worker(settings: Settings) -> BatchingWorker:
    """Redis first (cheap to check), then the engine (loads the model once), then RQ's side.
    The engine answers into the reporter's outbox, so the outbox is made first."""
    connection = connect(settings)
    outbox = Outbox()
    engine = build_engine(settings, outbox.post)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    return BatchingWorker(
        [queue],
        connection=connection,
        serializer=JSONSerializer,
        engine=engine,
        outbox=outbox,
        concurrency=settings.worker_concurrency,
        event_ttl_s=settings.event_ttl,
        job_timeout_s=settings.job_timeout,
        drain_timeout_s=settings.drain_timeout,
        refused_ttl_s=settings.refused_ttl,
        log_content=settings.log_content,
    )


def run(burst: bool = False) -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_fast_blas(settings.cpu_blas)  # before anything imports MLX
    try:
        worker = build_worker(settings)
    except ModelLoadError as exc:
        print(f"mlxq worker: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # any other start-up failure: one line, not a traceback
        log.debug("start-up failed", exc_info=True)
        print(f"mlxq worker: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    log.info("worker %s serving %s on queue %s", worker.name, settings.model, settings.queue_name)
    worker.work(burst=burst, logging_level=settings.log_level)
    return 0


def prepare_model() -> int:
    """``mlxq prepare-model``: fetch/convert the configured model now, e.g. while online."""
    from worker.model import resolve_model_path

    settings = get_settings()
    try:
        path = resolve_model_path(settings.model, settings.cache_dir)
    except ModelLoadError as exc:
        print(f"mlxq prepare-model: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
