"""Making MLX's CPU build fast enough to serve from (Linux workers without a GPU).

Measured on a 2-core x86-64 machine (docs/benchmarks.md): the ``mlx[cpu]`` wheel links the
reference BLAS, whose matmuls run at about 5 GFLOP/s; OpenBLAS runs the same ones 5-30x
faster. MLX's CPU quantized-matmul kernels are slow too, so quantized weights are expanded
to float32 once at load, where matmuls then go through BLAS. With both, the demo model
decodes about 2.5x faster alone and batching gives about 5x more aggregate throughput.
"""

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)


def load_fast_blas(setting: str) -> str | None:
    """Load OpenBLAS into the global symbol scope before MLX is imported, so that MLX's
    ``cblas_*`` calls resolve to it. ``setting``: "auto", "off", or a library path."""
    if setting == "off" or sys.platform != "linux":
        return None
    if "mlx.core" in sys.modules:
        log.warning("MLX was imported before OpenBLAS could be loaded; keeping its own BLAS")
        return None
    path = ctypes.util.find_library("openblas") if setting == "auto" else setting
    if path is None:
        log.warning(
            "OpenBLAS not found: MLX's CPU build will use its slow reference BLAS "
            "(Debian/Ubuntu: apt-get install libopenblas0-pthread)"
        )
        return None
    global _openblas
    try:
        _openblas = ctypes.CDLL(path, mode=os.RTLD_GLOBAL)
    except OSError as exc:
        log.warning("could not load %s (%s); MLX keeps its own BLAS", path, exc)
        return None
    log.info("MLX CPU matmuls use %s", path)
    return path


_openblas: ctypes.CDLL | None = None


def share_cores(processes: int) -> int | None:
    """Give OpenBLAS this process's share of the machine's cores when ``processes`` MLX
    processes run on it (a worker group's ranks on one host): each one using every core
    slows them all (two ranks on two cores decoded 2x slower so). Returns the threads set."""
    if _openblas is None or processes < 2:
        return None
    threads = max(1, (os.cpu_count() or 1) // processes)
    try:
        _openblas.openblas_set_num_threads(threads)
    except AttributeError:
        return None
    return threads


def on_cpu() -> bool:
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.cpu


DEQUANTIZE_BLOCK_VALUES = 1 << 22
"""Values expanded per step (16 MB of float32): each step is evaluated on its own, so a model
loading beside others that generate never holds the CPU for long (one 113 MB embedding
expanded at once paused a neighbour's decoding for seconds on two cores)."""


def dequantize_to_float32(model) -> int:
    """Replace quantized layers with float32 ones holding exactly the same values.

    Returns how many layers were expanded. Costs memory (about 8x a 4-bit model), which is
    why it is only done on the CPU, where it pays off. Layers are expanded in blocks of
    rows, each evaluated before the next (see DEQUANTIZE_BLOCK_VALUES).
    """
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten

    count = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding):
            continue
        weight = _expanded(module)
        replacement: nn.Module
        if isinstance(module, nn.QuantizedEmbedding):
            replacement = nn.Embedding(*weight.shape)
        else:
            replacement = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
            if "bias" in module:
                replacement.bias = module.bias.astype(mx.float32)
        replacement.weight = weight
        model.update_modules(tree_unflatten([(name, replacement)]))
        count += 1
    return count


def _expanded(module):
    """A quantized layer's weight as float32, expanded and evaluated block by block."""
    import mlx.core as mx

    rows = module.weight.shape[0]
    columns = module.scales.shape[-1] * module.group_size
    step = max(1, DEQUANTIZE_BLOCK_VALUES // max(1, columns))
    biases = getattr(module, "biases", None)
    blocks = []
    for start in range(0, rows, step):
        block = mx.dequantize(
            module.weight[start : start + step],
            module.scales[start : start + step],
            None if biases is None else biases[start : start + step],
            module.group_size,
            module.bits,
            mode=getattr(module, "mode", "affine"),
        ).astype(mx.float32)
        mx.eval(block)
        blocks.append(block)
    weight = blocks[0] if len(blocks) == 1 else mx.concatenate(blocks)
    mx.eval(weight)
    return weight
