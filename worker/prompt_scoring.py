"""Scoring a prompt: each of its tokens' log-probability given the tokens before it, as
``echo`` with ``logprobs`` asks on ``/v1/completions`` (evaluation harnesses compare answers
by these log-likelihoods). On the engine thread: one forward pass over the prompt, in chunks
with a KV cache of its own, so that a long prompt never holds a whole prompt-by-vocabulary
matrix of logits at once.

The values are the model's own distribution (no temperature, penalty or bias), as vLLM's
``prompt_logprobs``; the first token has none (null).
"""

from typing import Any, cast

import mlx.core as mx

from shared.schemas import PromptLogprob, TopLogprob
from worker.logprobs import LogprobReader

CHUNK_TOKENS = 512
"""Prompt positions per forward pass: 512 x a 150k vocabulary of float32 logits is 300 MB."""


def score_prompt(
    model: Any, tokens: list[int], reader: LogprobReader, top: int
) -> list[PromptLogprob]:
    """A PromptLogprob per token of ``tokens`` (the first with logprob None), with the
    ``top`` likeliest tokens at each position."""
    from mlx_lm.generate import generation_stream
    from mlx_lm.models.cache import make_prompt_cache

    entries = [_first(reader.text(tokens[0]))]
    cache = make_prompt_cache(model)
    with mx.stream(generation_stream):
        for start in range(0, len(tokens) - 1, CHUNK_TOKENS):
            inputs = tokens[start : start + CHUNK_TOKENS]
            targets = tokens[start + 1 : start + 1 + len(inputs)]
            logits = model(mx.array(inputs)[None], cache=cache)[0].astype(mx.float32)
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            entries += _entries(logprobs, targets, reader, top)
    return entries


def _first(text: str) -> PromptLogprob:
    return PromptLogprob(token=text, logprob=None, bytes=list(text.encode()), top_logprobs=None)


def _entries(
    logprobs: mx.array, targets: list[int], reader: LogprobReader, top: int
) -> list[PromptLogprob]:
    """The rows of ``logprobs`` that have a next token, read at once (one transfer each)."""
    rows = logprobs[: len(targets)]
    chosen = mx.take_along_axis(rows, mx.array(targets)[:, None], axis=-1)[:, 0]
    values = cast(list[float], chosen.tolist())
    tops: list[list[TopLogprob]] = [[] for _ in targets]
    if top > 0:
        ids = mx.argpartition(-rows, kth=top - 1, axis=-1)[:, :top]
        best = mx.take_along_axis(rows, ids, axis=-1)
        order = mx.argsort(-best, axis=-1)
        top_ids = cast(list[list[int]], mx.take_along_axis(ids, order, axis=-1).tolist())
        top_values = cast(list[list[float]], mx.take_along_axis(best, order, axis=-1).tolist())
        tops = [
            [reader.top(token, value) for token, value in zip(ids_row, values_row, strict=True)]
            for ids_row, values_row in zip(top_ids, top_values, strict=True)
        ]
    return [
        PromptLogprob(
            token=(text := reader.text(token)),
            logprob=value,
            bytes=list(text.encode()),
            top_logprobs=alternatives,
        )
        for token, value, alternatives in zip(targets, values, tops, strict=True)
    ]
