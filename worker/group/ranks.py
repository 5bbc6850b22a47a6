"""Joining a worker group and what its ranks tell each other outside the model's own
collectives: rank 0's objects (its settings, each step's plan) and every rank's host name.

MLX has one distributed group per process (``mx.distributed.init``), so the group this
process joined is kept here too (``joined``): the loader splits the model it loads by it, the
heartbeat reports it.
"""

import pickle
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

HOST_BYTES = 256
"""Room for a host name in the gather (longer names are cut)."""


@dataclass
class GroupInfo:
    """This process's place in its group, and the group's shape."""

    group: Any
    """mx.distributed.Group"""
    rank: int
    size: int
    hosts: list[str]
    """Every rank's host name, by rank."""
    name: str
    """The group's name: rank 0's worker name (the Redis keys of its watch carry it)."""
    split: str | None = None
    """'tensor' or 'pipeline', once the model is split."""
    watch: Any = None
    """worker.group.watch.RankWatch, once started."""
    wake: Any = None
    """worker.group.wake.IdleWake, once the watch starts (both use the rank's Redis)."""

    @property
    def leads(self) -> bool:
        return self.rank == 0


_joined: GroupInfo | None = None


def join(worker_name: str) -> GroupInfo | None:
    """This process's group when MLX's launcher started it with others (None: alone).
    ``worker_name``: rank 0's is the group's name (the others' is replaced by it)."""
    global _joined
    import mlx.core as mx

    group = mx.distributed.init()
    if group.size() < 2:
        return None
    name = share(group, worker_name if group.rank() == 0 else None)
    hosts = _gather_hosts(group, socket.gethostname())
    _joined = GroupInfo(group, group.rank(), group.size(), hosts, name)
    return _joined


def joined() -> GroupInfo | None:
    return _joined


def share(group: Any, obj: Any, stream: Any = None) -> Any:
    """Rank 0's ``obj``, on every rank (the others pass anything). A sum over the ranks,
    where all but rank 0 add zeros, as mlx_lm.server shares its requests; ``None`` costs one
    small collective. ``stream``: where the collectives run (the default stream if None)."""
    import mlx.core as mx

    with mx.stream(stream if stream is not None else mx.default_stream(mx.default_device())):
        return _share(group, obj)


def _share(group: Any, obj: Any) -> Any:
    import mlx.core as mx

    if group.rank() == 0:
        if obj is None:
            mx.eval(mx.distributed.all_sum(mx.array(0), group=group))
            return None
        data = mx.array(np.frombuffer(pickle.dumps(obj), dtype=np.uint8))
        mx.eval(mx.distributed.all_sum(mx.array(data.size), group=group))
        mx.eval(mx.distributed.all_sum(data, group=group))
        return obj
    size: Any = mx.distributed.all_sum(mx.array(0), group=group).item()
    if size == 0:
        return None
    data = mx.distributed.all_sum(mx.zeros(size, dtype=mx.uint8), group=group)
    return pickle.loads(np.array(data).tobytes())


def _gather_hosts(group: Any, host: str) -> list[str]:
    import mlx.core as mx

    raw = host.encode()[:HOST_BYTES].ljust(HOST_BYTES, b"\0")
    mine = mx.array(np.frombuffer(raw, dtype=np.uint8))
    flat = np.array(mx.distributed.all_gather(mine, group=group)).tobytes()
    return [
        flat[i * HOST_BYTES : (i + 1) * HOST_BYTES].rstrip(b"\0").decode(errors="replace")
        for i in range(group.size())
    ]
