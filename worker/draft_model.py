"""A draft model (MLXQ_DRAFT_MODEL): a smaller model with the same tokenizer that guesses a
sequence's next tokens when prompt lookup finds nothing to copy (mlx_lm.server's
``--draft-model``).

It guesses greedily, one token per forward pass of its own, and the model checks the guess as
it checks a prompt lookup's (worker/speculative_stream.py): a greedy guess is a draft proposed
with certainty, for which that rule keeps the text (greedy) and the distribution (sampled)
exactly. Each sequence keeps its own KV cache of the draft model (``DraftSession``), fed the
tokens its context gained since the last guess, and cut back to what was kept.
"""

import logging
from typing import Any, cast

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from shared.settings import Settings
from worker.model import LoadedModel, load_model
from worker.startup_error import StartupError

log = logging.getLogger(__name__)

PREFILL_STEP_TOKENS = 2048


class DraftModel:
    def __init__(self, loaded: LoadedModel) -> None:
        from worker.memory import array_bytes, arrays_of

        self.model_id = loaded.model_id
        self._model = loaded.model
        self.nbytes = array_bytes(arrays_of(loaded.model))
        """Its weights: counted in MLXQ_MEMORY_BUDGET with the model it drafts for."""

    def session(self) -> "DraftSession":
        """A new sequence's guesser, with an empty cache."""
        return DraftSession(self._model)


class DraftSession:
    def __init__(self, model: Any) -> None:
        self._model = model
        self._cache = make_prompt_cache(model)
        self._fed = 0
        """Leading tokens of the sequence's context that the cache holds."""
        self._guessed_after = 0
        self._guessed = 0

    def propose(self, context: list[int], limit: int) -> list[int]:
        """Up to ``limit`` greedy guesses to follow ``context`` (which only grows)."""
        if limit <= 0:
            return []
        new = context[self._fed :]
        for start in range(0, len(new) - 1, PREFILL_STEP_TOKENS):  # all but the last token
            chunk = new[start : min(start + PREFILL_STEP_TOKENS, len(new) - 1)]
            self._model(mx.array(chunk)[None], cache=self._cache)
            mx.eval([c.state for c in self._cache])
        inputs = mx.array(new[-1:])[None]
        guesses: list[int] = []
        for _ in range(limit):
            logits = self._model(inputs, cache=self._cache)[:, -1, :]
            token = mx.argmax(logits, axis=-1)
            guesses.append(cast(int, token.item()))
            inputs = token[None]
        # the cache holds the context and every guess but the last
        self._fed = len(context) + limit - 1
        self._guessed_after, self._guessed = len(context), limit
        return guesses

    def kept(self, accepted: int) -> None:
        """After the check: drop the guesses the model did not keep from the cache."""
        valid = self._guessed_after + min(accepted, self._guessed - 1)
        if self._fed > valid:
            trim_prompt_cache(self._cache, self._fed - valid)
            self._fed = valid


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
    return DraftModel(draft)
