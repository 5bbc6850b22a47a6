"""``mlxq worker``: load the model once, then serve jobs from the model's queue until stopped."""

import importlib
import logging
import queue
import sys

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared.errors import ModelLoadError
from shared.settings import Settings, get_settings, without_password
from worker.cpu_backend import load_fast_blas
from worker.engine_api import Emit, Engine
from worker.rq_worker import BatchingWorker

log = logging.getLogger("mlxq.worker")


def build_engine(settings: Settings, emit: Emit) -> Engine:
    if settings.engine == "mlx":
        from worker.mlx_engine import MLXEngine
        from worker.model import load_model

        loaded = load_model(
            settings.model, settings.cache_dir, cpu_dequantize=settings.cpu_dequantize
        )
        log.info(
            "loaded %s from %s (context %s tokens)",
            loaded.model_id,
            loaded.path,
            loaded.context_length,
        )
        return MLXEngine(
            loaded,
            max_batch=settings.worker_concurrency,
            max_tokens_cap=settings.max_tokens_cap,
            emit=emit,
        )
    if settings.engine == "echo":
        from worker.echo_engine import EchoEngine

        return EchoEngine(settings.model, emit)
    module_name, _, class_name = settings.engine.partition(":")
    try:
        engine_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelLoadError(f"MLXQ_ENGINE={settings.engine!r} cannot be loaded: {exc}") from exc
    return engine_class(settings, emit)


def connect(settings: Settings) -> redis.Redis:
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise ModelLoadError(
            f"Cannot reach Redis at {without_password(settings.redis_url)}: {exc}"
        ) from exc
    return connection


def run(burst: bool = False) -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_fast_blas(settings.cpu_blas)  # before anything imports MLX
    outputs: queue.Queue = queue.Queue()
    try:
        engine = build_engine(settings, outputs.put)  # before taking any job: load once
        connection = connect(settings)
    except ModelLoadError as exc:
        print(f"mlxq worker: {exc}", file=sys.stderr)
        return 1
    worker = BatchingWorker(
        [Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)],
        connection=connection,
        serializer=JSONSerializer,
        engine=engine,
        outputs=outputs,
        concurrency=settings.worker_concurrency,
        event_ttl_s=settings.event_ttl,
        drain_timeout_s=settings.drain_timeout,
        log_content=settings.log_content,
    )
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
