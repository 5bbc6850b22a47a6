"""``mlxq worker``: load the default model, then serve jobs from the queues of the models it
holds, loading others on demand (worker/model_keeper.py), until stopped."""

import importlib
import logging
import os
import sys
import uuid
from pathlib import Path

import redis
from rq.queue import Queue
from rq.serializers import JSONSerializer

from shared import protocol
from shared.redis_clients import worker_client
from shared.settings import DEMO_EMBEDDING_MODEL_ID, Settings, get_settings, without_password
from shared.units import human_bytes
from worker.config import WorkerConfig
from worker.cpu_backend import load_fast_blas
from worker.engine_api import Emit, Engine, EngineFactory
from worker.group.follower import group_settings, join_if_launched, run_follower, watch_group
from worker.group.ranks import joined
from worker.model import is_bert_folder
from worker.model_host import ModelHost
from worker.model_loader import LoadFailed
from worker.reporter import Outbox
from worker.rq_worker import BatchingWorker
from worker.startup_error import StartupError

log = logging.getLogger("mlxq.worker")


def engine_factory(name: str) -> EngineFactory:
    """The engine MLXQ_ENGINE names: 'mlx', 'embedding', 'echo', or 'module:Class'."""
    if name == "embedding":
        from worker.embedding_engine import EmbeddingEngine

        return EmbeddingEngine
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
        raise StartupError(f"MLXQ_ENGINE={name!r} cannot be loaded: {exc}") from exc
    return factory


def engine_name(settings: Settings) -> str:
    """MLXQ_ENGINE, except that an embedding model (the demo one, or a folder whose
    config.json names BertModel) is served by the embedding engine without being told."""
    if settings.engine != "mlx":
        return settings.engine
    if settings.model == DEMO_EMBEDDING_MODEL_ID or is_bert_folder(Path(settings.model)):
        return "embedding"
    return settings.engine


def build_engine(settings: Settings, emit: Emit) -> Engine:
    """The engine MLXQ_ENGINE names, refused at start-up when it lacks a member of the
    protocol (an engine subclasses ``Engine`` for the defaults of its optional abilities)."""
    name = engine_name(settings)
    engine = engine_factory(name)(settings, emit)
    if not isinstance(engine, Engine):
        raise StartupError(
            f"MLXQ_ENGINE={name!r} is not an engine: subclass worker.engine_api.Engine "
            "(it lacks some of its members)."
        )
    return engine


def connect(settings: Settings, name: str) -> redis.Redis:
    """The worker's Redis client; every connection it opens carries the worker's name, so
    the API sees at once when the worker is gone (protocol.silent_workers)."""
    connection = worker_client(settings.redis_url, protocol.worker_connection_name(name))
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise StartupError(
            f"Cannot reach Redis at {without_password(settings.redis_url)}: {exc}"
        ) from exc
    return connection


def build_host(settings: Settings, emit: Emit) -> ModelHost:
    """The worker's models: its catalogue read, its budget set, the default model loaded."""
    from worker.catalogue import Catalogue
    from worker.memory import memory_budget

    on_mlx = settings.engine in ("mlx", "embedding")
    cpu = on_mlx and _on_cpu()
    budget = memory_budget(settings.memory_budget)
    catalogue = Catalogue(settings, budget, expand_quantized=cpu and settings.cpu_dequantize)
    catalogue.scan()
    host = ModelHost(settings, emit, catalogue, budget, device="cpu" if cpu else "gpu")
    result = host.load_default()
    if isinstance(result, LoadFailed):
        raise StartupError(result.why)
    size = host.model_bytes(settings.model)
    if budget and size > budget:
        raise StartupError(
            f"MLXQ_MODEL={settings.model!r} takes {human_bytes(size)} loaded, more than "
            f"MLXQ_MEMORY_BUDGET ({human_bytes(budget)}): raise the budget or serve a smaller "
            "model."
        )
    return host


def _on_cpu() -> bool:
    from worker.cpu_backend import on_cpu

    return on_cpu()


def build_worker(settings: Settings, name: str | None = None) -> BatchingWorker:
    """Redis first (cheap to check), then the models (the default one loaded), then RQ's
    side. The engines answer into the reporter's outbox, so the outbox is made first."""
    name = name or uuid.uuid4().hex  # RQ's own way to name a worker, chosen for the connections
    connection = connect(settings, name)
    group = joined()
    if group is not None:  # rank 0 of a group: the other ranks start watching with it
        watch_group(settings, connection, group)
    outbox = Outbox()
    host = build_host(settings, outbox.post)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    return BatchingWorker(
        [queue],
        engine=host,
        outbox=outbox,
        config=WorkerConfig.from_settings(settings),
        settings=settings,
        connection=connection,
        serializer=JSONSerializer,
        name=name,
    )


def run(burst: bool = False) -> int:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_fast_blas(settings.cpu_blas)  # before anything imports MLX
    name = uuid.uuid4().hex
    try:
        group = join_if_launched(name)
        if group is not None:
            settings = group_settings(settings, group)
            if not group.leads:
                return run_follower(settings, group)
        worker = build_worker(settings, name)
    except StartupError as exc:
        return _startup_failed(str(exc))
    except Exception as exc:  # any other start-up failure: one line, not a traceback
        log.debug("start-up failed", exc_info=True)
        return _startup_failed(f"could not start: {type(exc).__name__}: {exc}")
    log.info(
        "worker %s serving %s on queue %s; it may load %d model(s) on demand",
        worker.name,
        settings.model,
        settings.queue_name,
        len(worker.engine.catalogue.models()),
    )
    worker.work(burst=burst, logging_level=settings.log_level)
    exit_now(0)
    return 0


def _startup_failed(why: str) -> int:
    """One line; in a group, also for the other ranks, which end with it."""
    group = joined()
    if group is not None and group.watch is not None:
        group.watch.record_end(f"rank {group.rank} ({group.hosts[group.rank]}): {why}")
    print(f"mlxq worker: {why}", file=sys.stderr)
    return 1


def exit_now(code: int) -> None:
    """Leave without running C++ static destructors: MLX's per-thread CPU streams are
    destroyed at exit while their scheduler thread may still be joinable, which aborts the
    process now and then (exit 134) after a clean shutdown. Everything is stopped and
    flushed here already: the jobs ended, the worker deregistered."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def prepare_model() -> int:
    """``mlxq prepare-model``: fetch/convert the configured model now, e.g. while online."""
    from worker.model import resolve_model_path

    settings = get_settings()
    try:
        path = resolve_model_path(settings.model, settings.cache_dir)
    except StartupError as exc:
        print(f"mlxq prepare-model: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
