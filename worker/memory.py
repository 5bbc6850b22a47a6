"""How much memory a worker may give model weights, and what a loaded model really takes.

The budget is MLXQ_MEMORY_BUDGET, or DEFAULT_SHARE of the machine's physical memory: on a
Mac, GPU and CPU share that memory, and macOS lets Metal use about three quarters of it;
60% leaves room for the KV caches, the prefix caches and everything else running. Several
workers on one machine each take their own budget: give each a share (``mlxq up`` does).

A loaded model is measured, not guessed from its files: the bytes of every array it holds
(``mx.array.nbytes``), after the CPU backend expanded quantized weights to float32 where it
does. Arrays shared by several models (the base weights under LoRA adapters) count once.
"""

import logging
import os
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SHARE = 0.6
"""Of the machine's memory, what a worker's models may take when MLXQ_MEMORY_BUDGET is unset."""


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # an unusual platform: no budget to derive
        log.warning("cannot read the machine's memory; set MLXQ_MEMORY_BUDGET")
        return 0


def memory_budget(setting: int | None) -> int:
    """MLXQ_MEMORY_BUDGET, or DEFAULT_SHARE of physical memory."""
    if setting is not None:
        return setting
    return int(physical_memory() * DEFAULT_SHARE)


def arrays_of(module: Any) -> list[Any]:
    """Every array a model (an ``mlx.nn.Module``) holds."""
    from mlx.utils import tree_flatten

    flat: Any = tree_flatten(module.parameters())
    return [value for _, value in flat]


def array_bytes(arrays: Iterable[Any], counted: set[int] | None = None) -> int:
    """Bytes of ``arrays``, each counted once; ``counted`` (ids of arrays already counted
    elsewhere, e.g. a shared base's) are left out and the new ones are added to it."""
    seen = counted if counted is not None else set()
    total = 0
    for array in arrays:
        if id(array) in seen:
            continue
        seen.add(id(array))
        total += int(array.nbytes)
    return total


def release_freed_memory() -> None:
    """After a model is dropped: collect its arrays and hand MLX's cached buffers back, so the
    memory is free for the next model (MLX keeps freed buffers for reuse otherwise)."""
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()
