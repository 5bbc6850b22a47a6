"""Speculative decoding inside the batch: every sequence's draft checked in one forward pass.

mlx-lm's ``GenerationBatch`` feeds each sequence one token per step. A speculative step feeds
each its pending token and its draft (rows padded to the longest draft: causal attention keeps
the padding from touching anything real, and its outputs are ignored), draws every position
with the sequence's own sampler and accepts by the same rule as the lone stream
(worker/speculative_stream.py), then fixes the KV cache row by row: the rejected positions
common to all rows are trimmed, and each row with more is rolled right by the rest, its left
padding growing (what mlx-lm does for prompts of different lengths).

Sequences with drafts and without share the step, but an extra column costs every row a
position of forward work, so a batch drafts only the columns whose expected accepted tokens
pay for them (``POSITION_COST``); a lone sequence drafts freely, a full batch rarely.

``GenerationBatch``'s fields are mlx-lm's internals (0.32, the version requirements.lock
pins); tests/worker/test_speculation.py checks every answer against plain decoding.
"""

from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import GenerationBatch
from mlx_lm.models.cache import BatchKVCache

from worker.prompt_lookup import MAX_DRAFT_TOKENS
from worker.sampling import RequestSampler
from worker.sequence import Sequence
from worker.speculative_stream import accepted_prefix, draw, grammar_of, spend_draws

POSITION_COST = 0.03
"""One more token position of forward work, as a fraction of a plain decode step of the
batch. Measured here (2-core CPU, demo model): a step of 8 sequences takes 150 ms, and each
extra column about 30 ms (8 positions, ~4 ms each)."""
ROLL_COST = 3e-4
"""Moving one row's KV of one token when rows drop different numbers of rejected positions,
as a fraction of a plain step: rolling 8 rows of 300 tokens took 100 ms here. Apple GPUs pay
less for both (unified memory, faster copies); these figures keep a CPU batch from losing."""


def plan_drafts(gen: GenerationBatch, sequences: list[Sequence | None]) -> list[list[int]] | None:
    """Each row's draft (cut to the batch's width), or None when no column is worth it."""
    if not any(s is not None and s.drafter is not None for s in sequences):
        return None
    if not all(isinstance(c, BatchKVCache) for c in gen.prompt_cache):
        return None  # a rotating or quantized cache cannot drop rejected positions per row
    full = [[0] * MAX_DRAFT_TOKENS] * len(sequences)
    if not _worthwhile_width(full, sequences):
        return None  # even drafts of every row at full length would not pay: skip the lookups
    pending = cast(list[int], gen._next_tokens.tolist())
    drafts: list[list[int]] = []
    for i, sequence in enumerate(sequences):
        drafter = None if sequence is None else sequence.drafter
        if drafter is None:
            drafts.append([])
            continue
        context = gen.tokens[i] + [pending[i]]
        room = gen.max_tokens[i] - gen._num_tokens[i] - 1
        draft = drafter.propose(context, room, guess=False)  # a draft model: lone streams only
        grammar = grammar_of(_processors(gen, i))
        if draft and grammar is not None:
            draft = draft[: grammar.allowed_prefix(context, draft)]
        drafts.append(draft)
    width = _worthwhile_width(drafts, sequences)
    return [d[:width] for d in drafts] if width else None


def _worthwhile_width(drafts: list[list[int]], sequences: list[Sequence | None]) -> int:
    """The draft columns that make the step pay best: each one's expected accepted tokens
    (a draft token is kept with its sequence's acceptance rate, given the ones before it)
    against its forward work and, with several rows, the roll that drops rejected positions.
    Costs are in plain steps, which yield one token per row."""
    rows = len(drafts)
    rates = [s.drafter.acceptance if s is not None and s.drafter else 0.0 for s in sequences]
    roll = (
        ROLL_COST * rows * max(len(s.prompt) + len(s.tokens) for s in sequences if s) * (rows > 1)
    )
    best_width, best_rate, expected = 0, 1.0, 0.0
    for column in range(1, max(len(d) for d in drafts) + 1):
        expected += sum(r**column for d, r in zip(drafts, rates, strict=True) if len(d) >= column)
        cost = 1 + POSITION_COST * rows * column + roll
        rate = (1 + expected / rows) / cost  # tokens per row and plain step, against 1
        if rate > best_rate:
            best_width, best_rate = column, rate
    return best_width


def speculative_next(
    gen: GenerationBatch, drafts: list[list[int]], sequences: list[Sequence | None]
) -> list[GenerationBatch.Response]:
    """``GenerationBatch.next`` with drafts: the tokens each row emits this step (its pending
    token and the accepted drafts), as the batch's responses, finished rows filtered out."""
    rows = len(gen.uids)
    width = 1 + max(len(d) for d in drafts)
    pending = cast(list[int], gen._next_tokens.tolist())
    inputs = [[pending[i]] + d + [pending[i]] * (width - 1 - len(d)) for i, d in enumerate(drafts)]
    logits = gen.model(mx.array(inputs), cache=gen.prompt_cache)
    greedy = _greedy_rows(gen, logits)
    emitted: list[list[tuple[int, Any]]] = []
    kept: list[int] = []
    for i, draft in enumerate(drafts):
        processors = _processors(gen, i)
        sampler = gen.samplers[i] if gen.samplers else None
        key = sampler.key if isinstance(sampler, RequestSampler) else None
        if i in greedy:
            best, row_logprobs = greedy[i]
            tokens, logprobs = best[: len(draft) + 1], list(row_logprobs[: len(draft) + 1])
        else:
            context = None
            if processors:
                context = gen._token_context[i].update_and_fetch(mx.array(pending[i : i + 1]))
            # no sampler: greedy, as the batch's fallback (the scheduler gives it none)
            row = logits[i, : len(draft) + 1]
            tokens, logprobs = draw(row, draft, sampler, processors, context)
        accepted = accepted_prefix(tokens, draft)
        spend_draws(sampler, key, accepted + 1)
        grammar = grammar_of(processors)
        if grammar is not None:
            grammar.rewind_to(len(gen.tokens[i]) + 1 + accepted)
        if processors and accepted:
            gen._token_context[i].update_and_fetch(mx.array(draft[:accepted]))
        sequence = sequences[i]
        if sequence is not None and sequence.drafter is not None:
            sequence.drafter.record(len(draft), accepted)
            sequence.drafted += len(draft)
            sequence.accepted += accepted
        # the pending token, then the accepted drafts, are in the cache now; the token drawn
        # after them is the next pending one
        kept_drafts = zip(draft[:accepted], logprobs[:accepted], strict=True)
        emitted.append([(pending[i], gen._next_logprobs[i]), *kept_drafts])
        gen.tokens[i] += [pending[i]] + draft[:accepted]
        kept.append(accepted)
        gen._next_logprobs[i] = logprobs[accepted]
        pending[i] = tokens[accepted]
    gen._next_tokens = mx.array(pending)
    _drop_rejected(gen.prompt_cache, [width - 1 - k for k in kept])
    return _responses(gen, emitted, rows)


def _greedy_rows(gen: GenerationBatch, logits: Any) -> dict[int, tuple[list[int], Any]]:
    """Rows drawn by argmax with nothing applied first, all at once: each one's tokens and
    log-probabilities per position."""
    rows = [
        i
        for i in range(len(gen.uids))
        if not _processors(gen, i) and (not gen.samplers or gen.samplers[i] is None)
    ]
    if not rows:
        return {}
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    best = mx.argmax(logprobs, axis=-1)
    mx.eval(best, logprobs)
    tokens = cast(list[list[int]], best.tolist())
    return {i: (tokens[i], logprobs[i]) for i in rows}


def _processors(gen: GenerationBatch, row: int) -> list[Any]:
    return (gen.logits_processors[row] if gen.logits_processors else None) or []


def _drop_rejected(caches: list[Any], rejected: list[int]) -> None:
    common = min(rejected)
    rest = [r - common for r in rejected]
    for cache in caches:
        if common:
            cache.trim(common)
        if any(rest):
            cache.prepare(right_padding=rest)
            cache.finalize()


def _responses(
    gen: GenerationBatch, emitted: list[list[tuple[int, Any]]], rows: int
) -> list[GenerationBatch.Response]:
    """As ``GenerationBatch.next`` reports its one token per row, for several: a row ends at
    its first token past max_tokens or a stop token, and the tokens after it are dropped."""
    responses, keep = [], []
    for i in range(rows):
        finished = False
        for token, logprobs in emitted[i]:
            gen._num_tokens[i] += 1
            finish_reason = "length" if gen._num_tokens[i] >= gen.max_tokens[i] else None
            if gen._matchers[i].advance(token):
                finish_reason = "stop"
            finished = finish_reason is not None
            responses.append(
                GenerationBatch.Response(
                    uid=gen.uids[i],
                    token=token,
                    logprobs=logprobs,
                    finish_reason=finish_reason,
                    prompt_cache=gen.extract_cache(i) if finished else None,
                    all_tokens=gen.tokens[i] if finished else None,
                )
            )
            if finished:
                break
        if not finished:
            keep.append(i)
    if len(keep) < rows:
        gen.filter(keep)
    return responses
