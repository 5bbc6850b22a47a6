"""Per-request samplers, so requests with different settings can share one batch."""

from typing import Any

from shared.schemas import SamplingParams


class SeededSampler:
    """Samples with the request's own random key, split once per token, so a seeded request
    gives the same answer whatever else shares its batch."""

    def __init__(self, params: SamplingParams) -> None:
        import mlx.core as mx

        assert params.seed is not None
        self._key = mx.random.key(params.seed)
        self._previous_key = self._key
        self._scale = 1.0 / params.temperature
        self._top_p = params.top_p

    def __call__(self, logprobs: Any) -> Any:
        import mlx.core as mx
        from mlx_lm.sample_utils import apply_top_p

        self._previous_key = self._key
        self._key, step_key = mx.random.split(self._key)
        if self._top_p < 1.0:
            logprobs = apply_top_p(logprobs, self._top_p)
        return mx.random.categorical(logprobs * self._scale, key=step_key)

    def rewind(self) -> None:
        """Forget the last draw (generate_step samples one token ahead; moving a stream into
        the batch discards that token and samples it again)."""
        self._key = self._previous_key


GREEDY_BELOW_TEMPERATURE = 1e-3
"""Temperatures this small are greedy in effect; dividing by them overflows to NaN."""


def make_request_sampler(params: SamplingParams) -> Any | None:
    """None means greedy (the batch's shared argmax)."""
    if params.temperature < GREEDY_BELOW_TEMPERATURE:
        return None
    if params.seed is not None:
        return SeededSampler(params)
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=params.temperature, top_p=params.top_p)
