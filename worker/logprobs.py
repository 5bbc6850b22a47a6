"""Log-probabilities as OpenAI returns them: the chosen token's, and its likeliest rivals'.

Computed on the engine thread from the distribution mlx-lm hands back with each token (the
one the token was drawn from, after logits processors); only for requests that ask.
"""

from typing import Any, cast

import mlx.core as mx

from shared.schemas import TokenLogprob, TopLogprob


class LogprobReader:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def entry(self, token: int, logprobs: Any, top: int) -> TokenLogprob:
        """``token``'s log-probability and the ``top`` likeliest tokens of ``logprobs``."""
        vector = logprobs.reshape(-1)
        alternatives: list[TopLogprob] = []
        if top > 0:
            ids = mx.argpartition(-vector, kth=top - 1)[:top]
            values = vector[ids]
            order = mx.argsort(-values)
            top_ids = cast(list[int], ids[order].tolist())
            top_values = cast(list[float], values[order].tolist())
            for i, value in zip(top_ids, top_values, strict=True):
                alternatives.append(self.top(i, value))
        text = self.text(token)
        return TokenLogprob(
            token=text,
            logprob=vector[token].item(),
            bytes=list(text.encode()),
            top_logprobs=alternatives,
        )

    def top(self, token: int, logprob: float) -> TopLogprob:
        """One of the likeliest tokens at a position."""
        text = self.text(token)
        return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))

    def text(self, token: int) -> str:
        """The token as text (alone: a piece of a character decodes as U+FFFD)."""
        if token not in self._texts:
            self._texts[token] = self._tokenizer.decode([token])
        return self._texts[token]
