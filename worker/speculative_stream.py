"""A lone sequence decoded speculatively: guessed tokens checked in one forward pass.

Each step feeds the last generated token plus a draft (prompt lookup, worker/prompt_lookup.py)
and reads the model's distribution after every one of them. Position by position, the
sequence's own sampler draws the token the model would have produced there; the draft token
is kept when the draw equals it, and the first draw that differs ends the step (it is emitted
in the draft's place). When every draft token is kept, the draw after the last one is a bonus.

This is the standard acceptance rule for a draft that proposes one token with certainty (a
prompt lookup): a draft token is kept with the model's own probability of it, and a rejected
one is replaced by a draw from the model's distribution without it. So greedy output is the
plain decoding's, and sampled output keeps its distribution; a seeded request even gives the
same text, as each emitted token spends one split of its key, as in plain decoding.

Logits processors (penalties, logit_bias, a grammar) see each position's own context; a
grammar first cuts the draft at the first token it forbids, and is rewound to the kept tokens.

The KV cache always holds the context but its last token (the next step's first input).
"""

from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import generation_stream
from mlx_lm.models.cache import trim_prompt_cache

from worker.constrained import JsonConstraint
from worker.prefix_cache import common_prefix
from worker.sampling import RequestSampler
from worker.sequence import Sequence

PREFILL_STEP_TOKENS = 2048
"""Prompt tokens fed per forward pass while prefilling (mlx-lm's generate_step default)."""


class SpeculativeStream:
    def __init__(self, model: Any, sequence: Sequence, cache: list[Any], cached: int) -> None:
        self.sequence = sequence
        self.cache = cache
        self._model = model
        self._context = list(sequence.prompt)
        self._grammar = grammar_of(sequence.processors)
        self._prefill(sequence.prompt[cached:-1])

    def step(self) -> list[tuple[int, Any]]:
        """Emit one or more tokens, each with the log-probabilities it was drawn from."""
        sequence = self.sequence
        draft = self._draft()
        key = sequence.sampler.key if isinstance(sequence.sampler, RequestSampler) else None
        with mx.stream(generation_stream):
            inputs = mx.array(self._context[-1:] + draft)[None]
            logits = self._model(inputs, cache=self.cache)[0]
            context = mx.array(self._context) if sequence.processors else None
            drawn, logprobs = draw(logits, draft, sequence.sampler, sequence.processors, context)
        kept = accepted_prefix(drawn, draft)
        if len(draft) > kept:
            trim_prompt_cache(self.cache, len(draft) - kept)
        if self._grammar is not None:
            self._grammar.rewind_to(len(self._context) + kept)
        spend_draws(sequence.sampler, key, kept + 1)
        if sequence.drafter is not None:
            sequence.drafter.record(len(draft), kept)
        sequence.drafted += len(draft)
        sequence.accepted += kept
        emitted = drawn[: kept + 1]
        self._context += emitted
        return [(token, logprobs[i]) for i, token in enumerate(emitted)]

    def cache_for(self, tokens: list[int]) -> list[Any]:
        """The cache cut to the longest prefix of ``tokens`` it holds (the sequence ended
        inside a step: the tokens after its last are not part of it)."""
        held = self.cache[0].offset
        shared = common_prefix(self._context[:held], tokens)
        if held > shared:
            trim_prompt_cache(self.cache, held - shared)
        return self.cache

    def _prefill(self, tokens: list[int]) -> None:
        with mx.stream(generation_stream):
            for start in range(0, len(tokens), PREFILL_STEP_TOKENS):
                chunk = mx.array(tokens[start : start + PREFILL_STEP_TOKENS])[None]
                self._model(chunk, cache=self.cache)
                mx.eval([c.state for c in self.cache])

    def _draft(self) -> list[int]:
        drafter = self.sequence.drafter
        if drafter is None:
            return []
        room = self.sequence.max_tokens - len(self.sequence.tokens) - 1
        draft = drafter.propose(self._context, room)
        if draft and self._grammar is not None:
            draft = draft[: self._grammar.allowed_prefix(self._context, draft)]
        return draft


def draw(
    logits: Any, draft: list[int], sampler: Any, processors: list[Any], context: Any
) -> tuple[list[int], list[Any]]:
    """What ``sampler`` (None: greedy) draws at each position of ``logits`` (one row per
    draft token, plus one), and the log-probabilities, after ``processors``, it drew from.
    ``context``: the tokens before the first position (an array; needed with processors)."""
    if not processors and sampler is None:  # greedy: every position at once
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        tokens = mx.argmax(logprobs, axis=-1)
        mx.eval(tokens, logprobs)
        return cast(list[int], tokens.tolist()), list(logprobs)
    rows, drawn = [], []
    for position in range(len(draft) + 1):
        row = logits[position : position + 1]
        if processors:
            seen = context
            if position:
                seen = mx.concatenate([context, mx.array(draft[:position], dtype=context.dtype)])
            for processor in processors:
                row = processor(seen, row)
        row = row - mx.logsumexp(row, axis=-1, keepdims=True)
        drawn.append(sampler(row) if sampler is not None else mx.argmax(row, axis=-1))
        rows.append(row[0])
    mx.eval(drawn, rows)
    return [cast(int, t.item()) for t in drawn], rows


def accepted_prefix(drawn: list[int], draft: list[int]) -> int:
    """How many draft tokens were drawn as they were guessed, from the first on."""
    kept = 0
    while kept < len(draft) and drawn[kept] == draft[kept]:
        kept += 1
    return kept


def spend_draws(sampler: Any, key: Any, emitted: int) -> None:
    """A seeded sampler's key as if it had drawn only the emitted tokens (one split each,
    as in plain decoding: the same seed gives the same text)."""
    if isinstance(sampler, RequestSampler):
        sampler.replay(key, emitted)


def grammar_of(processors: list[Any]) -> JsonConstraint | None:
    return next((p for p in processors if isinstance(p, JsonConstraint)), None)
