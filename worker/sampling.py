"""Per-request sampling, so requests with different settings can share one batch.

Each sequence gets its own sampler (temperature, top_p, min_p, top_k, and its own random key
when seeded) and its own logits processors (logit_bias and the three penalties), which
mlx-lm's ``generate_step`` and ``BatchGenerator`` apply row by row.
"""

from typing import Any

from shared.errors import InvalidRequest
from shared.schemas import SamplingParams

GREEDY_BELOW_TEMPERATURE = 1e-3
"""Temperatures this small are greedy in effect; dividing by them overflows to NaN."""
SMALLEST_TOP_P = 1e-6
"""Below this, 1 - top_p is 1 in float32 (its epsilon is about 1.2e-7)."""
PENALTY_CONTEXT_TOKENS = 20
"""Tokens the penalties look back over (mlx-lm's and mlx_lm.server's default)."""


class RequestSampler:
    """Temperature with top_p, min_p and top_k filters, in mlx-lm's order. A seeded sampler
    draws with the request's own random key, split once per token, so a seeded request gives
    the same answer whatever else shares its batch."""

    def __init__(self, params: SamplingParams) -> None:
        import mlx.core as mx

        self._params = params
        self._scale = 1.0 / params.temperature
        self._key = mx.random.key(params.seed) if params.seed is not None else None
        self._previous_key = self._key

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx
        from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

        params = self._params
        if params.top_p < 1.0:
            logprobs = apply_top_p(logprobs, params.top_p)
        if params.min_p > 0.0:
            logprobs = apply_min_p(logprobs, params.min_p)
        if params.top_k > 0:
            logprobs = apply_top_k(logprobs, params.top_k)
        if self._key is None:
            return mx.random.categorical(logprobs * self._scale)
        self._previous_key = self._key
        self._key, step_key = mx.random.split(self._key)
        return mx.random.categorical(logprobs * self._scale, key=step_key)

    @property
    def key(self) -> Any:
        """The random key the next draw splits (None: unseeded)."""
        return self._key

    def replay(self, key: Any, draws: int) -> None:
        """Set the key to where ``draws`` draws from ``key`` leave it: a speculative step
        draws at every draft position, but only the emitted tokens spend a split."""
        import mlx.core as mx

        if key is None:
            return
        for _ in range(draws):
            key, _ = mx.random.split(key)
        self._key = self._previous_key = key

    def rewind(self) -> None:
        """Forget the last draw (generate_step samples one token ahead; moving a stream into
        the batch discards that token and samples it again)."""
        self._key = self._previous_key


def make_request_sampler(params: SamplingParams) -> RequestSampler | None:
    """None means greedy (the batch's shared argmax). A top_p too small for float32 keeps only
    the likeliest token, which is greedy too; computed in float32 it would round to 1 - top_p
    = 1 and switch nucleus sampling off instead."""
    if params.temperature < GREEDY_BELOW_TEMPERATURE or params.top_p < SMALLEST_TOP_P:
        return None
    return RequestSampler(params)


def check_logit_bias(params: SamplingParams, vocab_size: int) -> None:
    """Refuse token ids the model does not have (before the job reaches the engine)."""
    bad = sorted(t for t in params.logit_bias if not 0 <= t < vocab_size)
    if bad:
        raise InvalidRequest(
            f"logit_bias: token ids {bad[:5]} are outside this model's vocabulary "
            f"(0 to {vocab_size - 1})."
        )


def make_logits_processors(params: SamplingParams) -> list[Any]:
    """logit_bias and the penalties, as mlx-lm logits processors (applied before sampling,
    greedy decoding included). Engine thread only: they hold MLX arrays."""
    from mlx_lm.sample_utils import make_logits_processors as mlx_lm_processors

    return mlx_lm_processors(
        logit_bias=params.logit_bias or None,
        repetition_penalty=(
            params.repetition_penalty if params.repetition_penalty != 1.0 else None
        ),
        repetition_context_size=PENALTY_CONTEXT_TOKENS,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=PENALTY_CONTEXT_TOKENS,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=PENALTY_CONTEXT_TOKENS,
    )
