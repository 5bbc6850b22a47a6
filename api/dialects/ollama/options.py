"""Ollama's ``options``: the sampling and limits a request may set, each honoured, or a
documented no-op with the reason; any other name is refused."""

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from api.core.validators import StrictBody, normalized_stops

OLLAMA_DEFAULTS: dict[str, float] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repeat_penalty": 1.1,
}
"""The sampling Ollama documents for a request whose ``options`` leave these out (its
Modelfile defaults); mlxq applies the same, so an Ollama client gets the answers it expects.
``num_predict`` -1 (no limit), ``min_p`` 0, ``seed`` -1 (random) and no penalties are mlxq's
defaults already."""

NO_OP_OPTIONS: dict[str, str] = {
    "num_ctx": "the context window is the model's own; a prompt and num_predict that do not "
    "fit are refused with a 400, nothing is truncated",
    "num_batch": "workers batch whole requests together (MLXQ_WORKER_CONCURRENCY) and "
    "prefill each prompt in MLX's own steps",
    "num_gpu": "MLX keeps the whole model on the GPU (unified memory); no layers to offload",
    "main_gpu": "each worker uses its machine's one GPU",
    "num_thread": "MLX chooses its own CPU threads",
    "numa": "MLX chooses where memory lives",
    "low_vram": "MLX shares unified memory; there is no separate VRAM to save",
    "f16_kv": "the KV cache keeps the model's own dtype",
    "use_mmap": "a worker loads the weights once, at start-up, as mlx-lm does",
    "use_mlock": "a worker loads the weights once, at start-up, as mlx-lm does",
    "vocab_only": "a worker always loads the whole model",
    "embedding_only": "a chat model's worker generates text; embeddings come from embedding "
    "workers (/api/embed)",
    "logits_all": "per-token log-probabilities come with logprobs / top_logprobs",
    "num_keep": "nothing is truncated, so no prompt tokens need keeping",
    "repeat_last_n": "penalties apply over mlx-lm's fixed window of the last 20 tokens",
    "penalize_newline": "deprecated by Ollama; a newline is penalised like any other token",
    "tfs_z": "tail-free sampling is not implemented (Ollama dropped it too)",
    "typical_p": "locally typical sampling is not implemented; use top_p, top_k or min_p",
    "mirostat": "Mirostat sampling is not implemented; use temperature, top_p, top_k or min_p",
    "mirostat_eta": "Mirostat sampling is not implemented",
    "mirostat_tau": "Mirostat sampling is not implemented",
}
"""Ollama options that change nothing here, each with the reason; accepted with a value of
their type (``NO_OP_TYPES``)."""

_INTEGER_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep")
_BOOLEAN_OPTIONS = (
    "numa",
    "low_vram",
    "f16_kv",
    "use_mmap",
    "use_mlock",
    "vocab_only",
    "embedding_only",
    "logits_all",
    "penalize_newline",
)
NO_OP_TYPES: dict[str, type] = {
    **dict.fromkeys(_INTEGER_OPTIONS, int),
    "repeat_last_n": int,
    "mirostat": int,
    **dict.fromkeys(_BOOLEAN_OPTIONS, bool),
    **dict.fromkeys(("tfs_z", "typical_p", "mirostat_eta", "mirostat_tau"), float),
}
"""The type Ollama gives each no-op option: a no-op still takes only a value it could mean
(``num_ctx: NaN`` is no context size)."""


def _no_op_value_problem(name: str, value: Any) -> str | None:
    kind = NO_OP_TYPES[name]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    if ok:
        return None
    return f"option {name!r} takes a{'n' if kind is int else ''} {kind.__name__}, not {value!r}"


HONOURED_OPTIONS = (
    "num_predict",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
)


class OllamaOptions(StrictBody):
    """``options``: the honoured ones are fields; no-ops (``NO_OP_OPTIONS``) are accepted
    and dropped here; any other name is refused."""

    num_predict: int | None = Field(
        None, description="Most tokens to generate; -1 (or -2, fill the context): no limit."
    )
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_k: int | None = Field(None, ge=0, description="0: off.")
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="0: greedy.")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, le=2**64 - 1, description="Negative: random.")
    stop: str | list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=2.0, description="1: off.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(k for k in data if k not in HONOURED_OPTIONS and k not in NO_OP_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}: mlxq honours {', '.join(HONOURED_OPTIONS)}, "
                "and accepts Ollama's other documented options as no-ops"
            )
        for name in (k for k in data if k in NO_OP_OPTIONS):
            problem = _no_op_value_problem(name, data[name])
            if problem is not None:
                raise ValueError(problem)
        return {k: v for k, v in data.items() if k in HONOURED_OPTIONS}

    @field_validator("num_predict")
    @classmethod
    def _limit(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value not in (-1, -2):
            raise ValueError("num_predict is at least 1, or -1 (no limit)")
        return value

    _stops = field_validator("stop")(normalized_stops)

    @property
    def max_tokens(self) -> int | None:
        return self.num_predict if self.num_predict is not None and self.num_predict > 0 else None

    @property
    def stops(self) -> list[str]:
        return self.stop  # type: ignore[return-value]  # normalized by _stops
