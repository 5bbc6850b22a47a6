"""Prompt lookup: guess a sequence's next tokens from its own prompt and answer so far.

When the last few tokens (an n-gram) occurred earlier in the sequence, the tokens that
followed them then are a good guess for what follows now: a model editing code, quoting a
document or repeating a list copies long runs of its context. The guess costs a dictionary
lookup; the model then checks it in one forward pass (worker/speculative_stream.py).

``DraftBudget`` sizes each guess by how the recent ones fared, so a sequence whose guesses
keep failing soon stops paying for them (a rejected draft token costs a little forward work);
``Drafter`` is the two together, one per sequence.
"""

from dataclasses import dataclass
from typing import Protocol

MAX_NGRAM = 4
MIN_NGRAM = 2
"""The longest suffix that matches is used; one token alone matches too often to be worth it."""
MAX_DRAFT_TOKENS = 8
"""On the CPU, a forward pass of 8 tokens costs about twice one of 1 token (ANCHORS.md)."""
FIRST_DRAFT_TOKENS = 4
MAX_BACKOFF_STEPS = 16
DRAFT_MODEL_TOKENS = 3
"""A draft model's first guess length (mlx_lm.server's num_draft_tokens default): each of its
tokens costs a forward pass of the draft model."""
ACCEPTANCE_MEMORY = 0.8
"""Weight of the past in a sequence's acceptance estimate (about its last 5 drafts)."""


class PromptLookup:
    """An index of one sequence's n-grams: where each last occurred, and what followed."""

    def __init__(self, context: list[int]) -> None:
        self._tokens: list[int] = []
        self._last_end: dict[tuple[int, ...], int] = {}
        """An n-gram -> the position just after its latest occurrence before the suffix."""
        self._indexed = 0
        self.extend(context)

    def extend(self, tokens: list[int]) -> None:
        self._tokens.extend(tokens)

    def propose(self, limit: int) -> list[int]:
        """Up to ``limit`` tokens that followed the longest suffix's latest earlier
        occurrence; none when no suffix of MIN_NGRAM or more tokens occurred before."""
        if limit <= 0:
            return []
        tokens = self._tokens
        end = len(tokens)
        self._index_until(end - 1)  # n-grams ending before the last token: earlier ones only
        for n in range(min(MAX_NGRAM, end - 1), MIN_NGRAM - 1, -1):
            start = self._last_end.get(tuple(tokens[end - n :]))
            if start is not None:
                return tokens[start : min(start + limit, end)]
        return []

    def _index_until(self, end: int) -> None:
        tokens, index = self._tokens, self._last_end
        for stop in range(max(self._indexed, MIN_NGRAM), end + 1):
            for n in range(MIN_NGRAM, min(MAX_NGRAM, stop) + 1):
                index[tuple(tokens[stop - n : stop])] = stop
        self._indexed = max(self._indexed, end + 1)


@dataclass
class DraftBudget:
    """How many tokens a sequence's next draft may have. A fully accepted draft earns a
    longer one; a rejection shortens it to what was accepted plus one; after drafts that
    gained nothing, drafting pauses for 2, 4, ... MAX_BACKOFF_STEPS steps."""

    length: int = FIRST_DRAFT_TOKENS
    _misses: int = 0
    _pause: int = 0

    def next_length(self) -> int:
        """The draft length for this step (0: skip drafting this step)."""
        if self._pause > 0:
            self._pause -= 1
            return 0
        return self.length

    def record(self, proposed: int, accepted: int) -> None:
        if proposed == 0:
            return
        if accepted == proposed:
            self.length = min(MAX_DRAFT_TOKENS, self.length * 2)
        else:
            self.length = max(1, accepted + 1)
        if accepted == 0:
            self._misses += 1
            self._pause = min(MAX_BACKOFF_STEPS, 2**self._misses) if self._misses > 1 else 0
        else:
            self._misses = 0


class Guesser(Protocol):
    """A draft model's guesses for one sequence (worker/draft_model.py)."""

    cost: float
    """One of its forward passes, as a fraction of a plain decode step of the model."""

    def propose(self, context: list[int], limit: int) -> list[int]: ...

    def kept(self, accepted: int) -> None: ...


class Drafter:
    """One sequence's drafts: looked up in its context or, when nothing there matches and a
    draft model is at hand, guessed by it; sized by their budgets; and an estimate of how
    likely its next draft token is to be accepted (for a batch to weigh drafts)."""

    def __init__(self, prompt: list[int], guesser: Guesser | None = None) -> None:
        self._lookup = PromptLookup(prompt)
        self._known = len(prompt)
        self._budget = DraftBudget()
        self._guesser = guesser
        self._guesser_budget = DraftBudget(length=DRAFT_MODEL_TOKENS)
        self._guessed = False
        self.acceptance = 0.5
        """P(a draft token is accepted | the ones before it were): a running estimate."""

    @property
    def guesser(self) -> Guesser | None:
        return self._guesser

    def propose(self, context: list[int], room: int, *, guess: bool = True) -> list[int]:
        """A draft to follow ``context`` (the prompt and every token so far; it only grows),
        at most ``room`` tokens; ``guess``: the draft model may be asked at once (a lone
        stream; a batch asks it for all its rows together: ``guess_limit``, ``guessed``)."""
        self._lookup.extend(context[self._known :])
        self._known = len(context)
        draft = self._lookup.propose(min(self._budget.next_length(), room))
        self._guessed = False
        if not draft and guess and self._guesser is not None:
            draft = self.guessed(self._guesser.propose(context, self.guess_limit(room)))
        return draft

    def guess_limit(self, room: int) -> int:
        """How many tokens the draft model may guess this step (0: none), once lookup found
        nothing; asking counts a step of its budget."""
        if self._guesser is None or room <= 0:
            return 0
        return min(self._guesser_budget.next_length(), room)

    def guessed(self, draft: list[int]) -> list[int]:
        """The draft model's guess is this step's draft (its record follows it)."""
        self._guessed = bool(draft)
        return draft

    def record(self, proposed: int, accepted: int) -> None:
        """How this step's draft fared (``proposed``: what was checked, after any cut)."""
        if self._guessed:  # even when a grammar cut the whole guess: its cache must follow
            assert self._guesser is not None
            self._guesser.kept(accepted)
        if proposed == 0:
            return
        if self._guessed:
            self._guesser_budget.record(proposed, accepted)
        else:
            self._budget.record(proposed, accepted)
        tries = accepted + (accepted < proposed)
        rate = accepted / tries
        self.acceptance = ACCEPTANCE_MEMORY * self.acceptance + (1 - ACCEPTANCE_MEMORY) * rate
