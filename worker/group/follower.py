"""Starting a rank of a worker group: joining the group, taking rank 0's settings, watching
the other ranks, and, on every rank but 0, following rank 0's engine until it stops.

Rank 0 goes on as any worker (worker/main.py); the others take no job and answer no one: they
load their share of the model (the same loader, split by worker/group/split.py) and run the
engine's turns as rank 0 plans them (worker/group/engine.py).
"""

import logging
import os
import signal

import redis

from shared.settings import Settings
from worker.cpu_backend import share_cores
from worker.group.ranks import GroupInfo, join, share
from worker.group.wake import IdleWake
from worker.group.watch import RankWatch
from worker.startup_error import StartupError

log = logging.getLogger("mlxq.worker.group")

LAUNCHED_ENV = "MLX_RANK"
"""Set by mlx.launch for each process it starts."""


def join_if_launched(name: str) -> GroupInfo | None:
    """The group this process is a rank of, when MLX's launcher started it (None: alone)."""
    if LAUNCHED_ENV not in os.environ:
        return None
    group = join(name)
    if group is not None:
        here = group.hosts.count(group.hosts[group.rank])
        threads = share_cores(here)
        if threads is not None:
            log.info("%d ranks on this host: OpenBLAS uses %d thread(s) in each", here, threads)
        log.info(
            "rank %d of %d in worker group %s (hosts: %s)",
            group.rank,
            group.size,
            group.name,
            ", ".join(group.hosts),
        )
    return group


def group_settings(settings: Settings, group: GroupInfo) -> Settings:
    """Rank 0's settings on every rank (what the ranks decide must not differ), but each
    rank's own cache folder, BLAS and log level. A group serves its own model only."""
    from worker.main import engine_name

    leader: Settings = share(group.group, settings if group.leads else None)
    own = leader.model_copy(
        update={
            "cache_dir": settings.cache_dir,
            "cpu_blas": settings.cpu_blas,
            "log_level": settings.log_level,
        }
    )
    if own.models:
        if group.leads and own.models != Settings.model_fields["models"].default:
            log.warning(
                "a worker group serves its own model only: MLXQ_MODELS=%r is not loaded on "
                "demand here (plain workers beside the group can serve them)",
                own.models,
            )
        own = own.model_copy(update={"models": ""})
    if engine_name(own) != "mlx":
        raise StartupError(
            f"a worker group serves an MLX language model; {own.model!r} is served by the "
            f"{engine_name(own)!r} engine, which cannot be split"
        )
    return own


def watch_group(settings: Settings, connection: redis.Redis, group: GroupInfo) -> RankWatch:
    watch = RankWatch(connection, group.name, group.rank, group.size, settings.group_timeout_s)
    watch.start()
    group.watch = watch
    group.wake = IdleWake(connection, group.name, group.rank, group.size)
    return watch


def run_follower(settings: Settings, group: GroupInfo) -> int:
    """A rank after 0: load its share, follow rank 0's turns until rank 0 stops."""
    from worker.catalogue import Catalogue
    from worker.group.engine import GroupEngine
    from worker.main import exit_now
    from worker.memory import memory_budget
    from worker.model_loader import Bases, LoadFailed, load_item

    # Ctrl-C in the launcher's terminal reaches every rank: rank 0 finishes its jobs, then
    # tells the others to stop. SIGTERM (the launcher ending a failed group) ends a rank now.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise StartupError(f"rank {group.rank} cannot reach Redis: {exc}") from exc
    watch = watch_group(settings, connection, group)
    catalogue = Catalogue(
        settings, memory_budget(settings.memory_budget), expand_quantized=settings.cpu_dequantize
    )
    catalogue.scan()
    item = catalogue.item(settings.model)
    assert item is not None, "the catalogue always holds the default model"
    result = load_item(item, settings, lambda output: None, Bases())
    if isinstance(result, LoadFailed):
        raise StartupError(f"could not load its share of {settings.model}: {result.why}")
    engine = result.engine
    assert isinstance(engine, GroupEngine)
    log.info("rank %d follows rank 0 with its %s-parallel share", group.rank, group.split)
    engine.join()
    watch.stop()
    exit_now(0)
    return 0
