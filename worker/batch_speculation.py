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
pay for them (``POSITION_COST``); a lone sequence drafts freely, a full batch rarely. Rows
whose context has nothing to copy may have a draft model guess (MLXQ_DRAFT_MODEL), all such
rows in one pass of it per guessed token, when their expected gain pays for those passes.

``GenerationBatch``'s fields are mlx-lm's internals (0.32, the version requirements.lock
pins); tests/worker/test_speculation.py checks every answer against plain decoding.
"""

from typing import Any, cast

import mlx.core as mx
from mlx_lm.generate import GenerationBatch
from mlx_lm.models.cache import BatchKVCache

from worker.draft_model import DraftSession, guess_together
from worker.prompt_lookup import MAX_DRAFT_TOKENS, Drafter
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
    contexts = [gen.tokens[i] + [pending[i]] for i in range(len(sequences))]
    drafts: list[list[int]] = [[] for _ in sequences]
    guessing: dict[int, int] = {}
    """Rows the draft model may guess for (lookup found nothing): their limits."""
    for i, sequence in enumerate(sequences):
        drafter = None if sequence is None else sequence.drafter
        if drafter is None:
            continue
        room = gen.max_tokens[i] - gen._num_tokens[i] - 1
        drafts[i] = drafter.propose(contexts[i], room, guess=False)
        if not drafts[i] and (limit := drafter.guess_limit(room)):
            guessing[i] = limit
    guessed = _guess(drafts, guessing, contexts, sequences) if guessing else []
    for i, draft in enumerate(drafts):
        grammar = grammar_of(_processors(gen, i))
        if draft and grammar is not None:
            drafts[i] = draft[: grammar.allowed_prefix(contexts[i], draft)]
    width = _worthwhile_width(drafts, sequences)
    if not width:
        for i in guessed:  # no check this step (a grammar cut the guesses): none was kept
            cast(Drafter, cast(Sequence, sequences[i]).drafter).record(0, 0)
        return None
    return [d[:width] for d in drafts]


def _guess(
    drafts: list[list[int]],
    limits: dict[int, int],
    contexts: list[list[int]],
    sequences: list[Sequence | None],
) -> list[int]:
    """The draft model's guesses for the rows in ``limits``, all in one pass per guessed
    token, when they are expected to pay for that pass (its cost against the model's);
    returns the rows it guessed for."""
    drafters = {i: cast(Sequence, sequences[i]).drafter for i in limits}
    guessers = {i: d.guesser for i, d in drafters.items() if d is not None and d.guesser}
    if not guessers:
        return []
    passes = max(limits[i] for i in guessers)
    cost = passes * max(g.cost for g in guessers.values())
    placeholders = [[0] * limits[i] if i in guessers else d for i, d in enumerate(drafts)]
    _, with_guesses = _best_width(placeholders, sequences, extra_cost=cost)
    _, without = _best_width(drafts, sequences)
    if with_guesses <= without:
        return []
    rows = sorted(guessers)
    guesses = guess_together(
        [cast(DraftSession, guessers[i]) for i in rows],
        [contexts[i] for i in rows],
        [limits[i] for i in rows],
    )
    for i, guess in zip(rows, guesses, strict=True):
        drafts[i] = cast(Drafter, drafters[i]).guessed(guess)
    return rows


def _worthwhile_width(drafts: list[list[int]], sequences: list[Sequence | None]) -> int:
    """The draft columns that make the step pay best (0: none)."""
    return _best_width(drafts, sequences)[0]


def _best_width(
    drafts: list[list[int]], sequences: list[Sequence | None], extra_cost: float = 0.0
) -> tuple[int, float]:
    """The draft columns that make the step pay best, and the tokens per row and plain step
    they yield (1: a plain step): each column's expected accepted tokens (a draft token is kept
    with its sequence's acceptance rate, given the ones before it) against its forward work
    and, with several rows, the roll that drops rejected positions. Costs are in plain steps,
    which yield one token per row; ``extra_cost``: work already spent on the drafts (a draft
    model's passes)."""
    rows = len(drafts)
    rates = [s.drafter.acceptance if s is not None and s.drafter else 0.0 for s in sequences]
    roll = (
        ROLL_COST * rows * max(len(s.prompt) + len(s.tokens) for s in sequences if s) * (rows > 1)
    )
    best_width, best_rate, expected = 0, 1.0 / (1 + extra_cost), 0.0
    for column in range(1, max(len(d) for d in drafts) + 1):
        expected += sum(r**column for d, r in zip(drafts, rates, strict=True) if len(d) >= column)
        cost = 1 + extra_cost + POSITION_COST * rows * column + roll
        rate = (1 + expected / rows) / cost  # tokens per row and plain step, against 1
        if rate > best_rate:
            best_width, best_rate = column, rate
    return best_width, best_rate


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
