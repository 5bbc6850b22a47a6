"""What a worker tells the fleet about the model it loaded (``ModelFacts``): its capabilities,
parameters, family, quantization and size, read from the model folder and the tokenizer at
load. The API lists models from these (it never reads model files)."""

import json
import logging
from pathlib import Path
from typing import Any

from worker.engine_api import ModelFacts
from worker.fim import find_fim_tokens

log = logging.getLogger(__name__)

_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def chat_model_facts(path: Path, tokenizer: Any, parameter_count: int | None) -> ModelFacts:
    """A generation model: completion and tools always (its own template's tools, or mlxq's
    Hermes-format fallback), insert when its vocabulary has fill-in-the-middle markers,
    thinking when its tokenizer declares thinking markers."""
    capabilities = ["completion", "tools"]
    if find_fim_tokens(tokenizer) is not None:
        capabilities.append("insert")
    if getattr(tokenizer, "has_thinking", False):
        capabilities.append("thinking")
    config = read_config(path)
    return ModelFacts(
        capabilities=tuple(capabilities),
        parameter_count=parameter_count,
        family=_family(config),
        quantization=quantization_label(config),
        size_bytes=weights_bytes(path),
    )


def embedding_model_facts(path: Path, parameter_count: int) -> ModelFacts:
    config = read_config(path)
    return ModelFacts(
        capabilities=("embedding",),
        parameter_count=parameter_count,
        family=_family(config),
        quantization=quantization_label(config),
        size_bytes=weights_bytes(path),
    )


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _family(config: dict[str, Any]) -> str | None:
    family = config.get("model_type")
    return family if isinstance(family, str) and family else None


def quantization_label(config: dict[str, Any]) -> str | None:
    """The quantization as "Q4" (4-bit affine; "MXFP4" and the like for other modes), else
    the weights' type from the config ("BF16"); None when the config says neither."""
    quantization = config.get("quantization")
    if isinstance(quantization, dict) and isinstance(quantization.get("bits"), int):
        mode = quantization.get("mode", "affine")
        return f"Q{quantization['bits']}" if mode == "affine" else str(mode).upper()
    dtype = config.get("torch_dtype") or config.get("dtype")
    return _DTYPES.get(dtype) if isinstance(dtype, str) else None


def weights_bytes(path: Path) -> int | None:
    """The size of the model's safetensors weights; None when it has none."""
    sizes = [f.stat().st_size for f in path.glob("*.safetensors")]
    return sum(sizes) if sizes else None


def parameter_count(model: Any) -> int | None:
    """Parameters of a loaded mlx-lm model, quantized layers counted as their unpacked
    weights (mlx-lm's own count); None when it cannot be counted."""
    try:
        from mlx_lm.utils import get_total_parameters

        return int(get_total_parameters(model))
    except Exception as exc:  # an unusual model: the count is only for listings
        log.warning("could not count the model's parameters: %s", exc)
        return None
