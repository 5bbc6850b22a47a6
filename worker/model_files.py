"""What a model's files say of it without loading it: family, parameters, quantization,
context, size on disk, and the memory it will take loaded in this worker.

The parameter count comes from the safetensors headers (a few kB read per file): quantized
weights are counted unpacked, as mlx-lm counts them (``get_total_parameters``), and their
scales and biases not at all. The memory estimate is what the arrays will take: the bytes on
disk, or on MLX's CPU backend with MLXQ_CPU_DEQUANTIZE every quantized weight as float32
(worker/cpu_backend.py expands them at load). Once a model is loaded, the worker measures it
(worker/memory.py) and that figure replaces the estimate.
"""

import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U32": 4}
_DTYPE_LABELS = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_ctx")
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on a header."""


@dataclass(frozen=True)
class Weights:
    """What the safetensors headers of a folder add up to."""

    parameters: int
    disk_bytes: int
    quantized_parameters: int
    """Of ``parameters``, those stored quantized (expanded to float32 on a CPU worker)."""
    plain_bytes: int
    """Bytes of the tensors stored unquantized."""

    def memory_bytes(self, expand_quantized: bool) -> int:
        """What the arrays take loaded: as stored, or with quantized weights as float32."""
        if not expand_quantized:
            return self.disk_bytes
        return self.plain_bytes + 4 * self.quantized_parameters


def read_config(folder: Path, name: str = "config.json") -> dict[str, Any]:
    try:
        config = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def family(config: dict[str, Any]) -> str | None:
    value = config.get("model_type")
    return value if isinstance(value, str) and value else None


def context_length(config: dict[str, Any]) -> int | None:
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(section.get(key), int):
                return int(section[key])
    return None


def quantization(config: dict[str, Any]) -> str | None:
    """ "Q4" (4-bit affine; "MXFP4" and the like for other modes), else the weights' type
    ("BF16"); None when the config says neither."""
    quant = config.get("quantization")
    if isinstance(quant, dict) and isinstance(quant.get("bits"), int):
        mode = quant.get("mode", "affine")
        return f"Q{quant['bits']}" if mode == "affine" else str(mode).upper()
    dtype = config.get("torch_dtype") or config.get("dtype")
    return _DTYPE_LABELS.get(dtype) if isinstance(dtype, str) else None


def weights(folder: Path, config: dict[str, Any], pattern: str = "*.safetensors") -> Weights:
    """Add up the folder's safetensors headers (``pattern``: an adapter's own file)."""
    headers = {}
    disk = 0
    for file in sorted(folder.glob(pattern)):
        disk += file.stat().st_size
        headers.update(_header(file))
    found = config.get("quantization")
    quant: dict[str, Any] = found if isinstance(found, dict) else {}
    parameters = quantized = plain = 0
    for name, info in headers.items():
        if not isinstance(info, dict) or "shape" not in info:
            continue
        module, _, leaf = name.rpartition(".")
        size = math.prod(info["shape"])
        if (
            leaf in ("scales", "biases")
            and f"{module}.weight" in headers
            and _is_packed(headers, module)
        ):
            continue  # a quantized weight's own scales and biases: not parameters
        if leaf == "weight" and _is_packed(headers, module):
            bits = _bits(quant, module)
            count = size * 32 // bits
            parameters += count
            quantized += count
            continue
        parameters += size
        plain += size * _DTYPE_BYTES.get(info.get("dtype", "F32"), 4)
    return Weights(parameters, disk, quantized, plain)


def _is_packed(headers: dict[str, Any], module: str) -> bool:
    weight = headers.get(f"{module}.weight")
    return (
        isinstance(weight, dict) and weight.get("dtype") == "U32" and f"{module}.scales" in headers
    )


def _bits(quant: dict[str, Any], module: str) -> int:
    own = quant.get(module)
    if isinstance(own, dict) and isinstance(own.get("bits"), int):
        return int(own["bits"])
    return int(quant.get("bits", 4))


def _header(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        log.warning("cannot read the safetensors header of %s: %s", file, exc)
        return {}
    header.pop("__metadata__", None)
    return header if isinstance(header, dict) else {}


def fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when the model's files change (a re-download, a fixed config): each
    file's name, size and modification time."""
    files = []
    for file in sorted(folder.iterdir()) if folder.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            files.append((file.name, stat.st_size, stat.st_mtime_ns))
    return tuple(files)


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def is_adapter_folder(folder: Path) -> bool:
    """A LoRA (or DoRA) adapter as ``mlx_lm.lora`` writes it."""
    return (folder / "adapter_config.json").is_file() and (
        folder / "adapters.safetensors"
    ).is_file()


def is_embedding_config(config: dict[str, Any]) -> bool:
    """A BERT encoder (worker/bert.py): an embedding model."""
    return "BertModel" in (config.get("architectures") or []) or config.get("model_type") == "bert"
