"""A draft model (MLXQ_DRAFT_MODEL): a smaller model with the same tokenizer that guesses a
sequence's next tokens when prompt lookup finds nothing to copy (mlx_lm.server's
``--draft-model``).

It guesses greedily, one token per forward pass of its own, and the model checks the guess as
it checks a prompt lookup's (worker/speculative_stream.py): a greedy guess is a draft proposed
with certainty, for which that rule keeps the text (greedy) and the distribution (sampled)
exactly. Each sequence keeps its own KV cache of the draft model (``DraftSession``), fed the
tokens its context gained since the last guess, and cut back to what was kept. In a batch,
``guess_together`` guesses for every row that asks in one forward pass per guessed token: the
rows' caches are merged into one batch cache (left-padded, as mlx-lm batches prompts) and split
again after.
"""

import logging
from typing import Any, cast

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache, trim_prompt_cache

from shared.settings import Settings
from worker.model import LoadedModel, load_model
from worker.startup_error import StartupError

log = logging.getLogger(__name__)

PREFILL_STEP_TOKENS = 2048
CATCH_UP_TOKENS = 16
"""A row whose draft cache lags its context by more is fed alone first (a new sequence's
prompt); the last tokens of every row are fed together (a decode step adds 1 to 9)."""


class DraftModel:
    def __init__(self, loaded: LoadedModel, drafts_for: Any = None) -> None:
        from worker.memory import array_bytes, arrays_of

        self.model_id = loaded.model_id
        self._model = loaded.model
        self.nbytes = array_bytes(arrays_of(loaded.model))
        """Its weights: counted in MLXQ_MEMORY_BUDGET with the model it drafts for."""
        self.cost = 1.0
        """One of its forward passes against one of the model it drafts for: decoding reads
        every weight once, so their sizes (a batch weighs whether guesses pay with it)."""
        if drafts_for is not None:
            self.cost = min(1.0, self.nbytes / max(1, array_bytes(arrays_of(drafts_for))))

    def session(self) -> "DraftSession":
        """A new sequence's guesser, with an empty cache."""
        return DraftSession(self._model, self.cost)


class DraftSession:
    def __init__(self, model: Any, cost: float = 1.0) -> None:
        self._model = model
        self.cost = cost
        self._cache = make_prompt_cache(model)
        self._fed = 0
        """Leading tokens of the sequence's context that the cache holds."""
        self._guessed_after = 0
        self._guessed = 0

    def propose(self, context: list[int], limit: int) -> list[int]:
        """Up to ``limit`` greedy guesses to follow ``context`` (which only grows)."""
        if limit <= 0:
            return []
        self._catch_up(context, lag=1)
        inputs = mx.array(context[self._fed :])[None]
        guesses: list[int] = []
        for _ in range(limit):
            logits = self._model(inputs, cache=self._cache)[:, -1, :]
            token = mx.argmax(logits, axis=-1)
            guesses.append(cast(int, token.item()))
            inputs = token[None]
        self._guessed_for(context, limit, limit)
        return guesses

    def _catch_up(self, context: list[int], lag: int) -> None:
        """Feed the cache the context but its last ``lag`` tokens (at least what it lacks)."""
        end = len(context) - lag
        for start in range(self._fed, end, PREFILL_STEP_TOKENS):
            chunk = context[start : min(start + PREFILL_STEP_TOKENS, end)]
            self._model(mx.array(chunk)[None], cache=self._cache)
            mx.eval([c.state for c in self._cache])
        self._fed = max(self._fed, end)

    def _guessed_for(self, context: list[int], fed_guesses: int, limit: int) -> None:
        """The cache holds the context and ``fed_guesses - 1`` guesses (never the last)."""
        self._fed = len(context) + fed_guesses - 1
        self._guessed_after, self._guessed = len(context), limit

    def kept(self, accepted: int) -> None:
        """After the check: drop the guesses the model did not keep from the cache."""
        valid = self._guessed_after + min(accepted, self._guessed - 1)
        if self._fed > valid:
            trim_prompt_cache(self._cache, self._fed - valid)
            self._fed = valid


def guess_together(
    sessions: list[DraftSession], contexts: list[list[int]], limits: list[int]
) -> list[list[int]]:
    """Each row's greedy guesses (up to its limit) to follow its context, the rows' forward
    passes shared: their caches merged into one batch cache, split again after. Each
    session's cache then holds what ``propose`` would have left in it, and ``kept`` works the
    same."""
    batchable = len(sessions) > 1 and all(
        all(type(c) is KVCache for c in s._cache) and s._model is sessions[0]._model
        for s in sessions
    )
    if not batchable:  # a rotating or recurrent cache cannot be merged: one row at a time
        return [s.propose(c, n) for s, c, n in zip(sessions, contexts, limits, strict=True)]
    lag = min(CATCH_UP_TOKENS, *(len(c) for c in contexts))
    for session, context in zip(sessions, contexts, strict=True):
        session._catch_up(context, lag)
    # every row is cut back to lack the same number of tokens (no more than its context's),
    # and those are fed together
    width = max(len(c) - s._fed for s, c in zip(sessions, contexts, strict=True))
    for session, context in zip(sessions, contexts, strict=True):
        behind = width - (len(context) - session._fed)
        if behind:
            trim_prompt_cache(session._cache, behind)
            session._fed -= behind
    layers = len(sessions[0]._cache)
    cache = [BatchKVCache.merge([s._cache[layer] for s in sessions]) for layer in range(layers)]
    model, steps = sessions[0]._model, max(limits)
    inputs = mx.array([c[len(c) - width :] for c in contexts])
    columns = []
    for _ in range(steps):
        tokens = mx.argmax(model(inputs, cache=cache)[:, -1, :], axis=-1)
        columns.append(tokens)
        inputs = tokens[:, None]
    guesses = cast(list[list[int]], mx.stack(columns, axis=1).tolist())
    for row, (session, context, limit) in enumerate(zip(sessions, contexts, limits, strict=True)):
        session._cache = [layer_cache.extract(row) for layer_cache in cache]
        mx.eval([c.state for c in session._cache])
        session._guessed_for(context, steps, limit)
    return [row[:limit] for row, limit in zip(guesses, limits, strict=True)]


def load_draft_model(
    settings: Settings, loaded: LoadedModel, *, is_default: bool
) -> DraftModel | None:
    """MLXQ_DRAFT_MODEL for ``loaded``: None when unset. A draft with another tokenizer cannot
    guess ``loaded``'s tokens: for the worker's default model that stops the worker with one
    line; another model (models on demand) is served without it, as the log says."""
    if settings.draft_model is None:
        return None
    try:
        draft = load_model(
            settings.draft_model, settings.cache_dir, cpu_dequantize=settings.cpu_dequantize
        )
    except StartupError as exc:
        raise StartupError(f"MLXQ_DRAFT_MODEL: {exc}") from exc
    if draft.tokenizer.get_vocab() != loaded.tokenizer.get_vocab():
        message = (
            f"MLXQ_DRAFT_MODEL {settings.draft_model} does not share the tokenizer of "
            f"{loaded.model_id}: its guesses would be other tokens"
        )
        if is_default:
            raise StartupError(message + "; use a draft model of the same family.")
        log.warning("%s; %s is served without a draft model", message, loaded.model_id)
        return None
    log.info("draft model %s loaded for %s", draft.model_id, loaded.model_id)
    return DraftModel(draft, drafts_for=loaded.model)
