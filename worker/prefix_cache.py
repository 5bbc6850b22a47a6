"""Reusing KV across requests: the longest cached prefix of each new prompt is not prefilled.

Chat clients and agents resend the whole conversation every turn, so most of each prompt was
computed before. The worker keeps finished sequences' KV caches (and each prompt's, once it is
prefilled) in mlx-lm's ``LRUPromptCache``, a token trie bounded in bytes with least recently
used eviction, and starts each new sequence from the nearest entry. Engine thread only.

Only caches that can be trimmed back to a prefix are kept (plain KV caches). Models with
rotating or recurrent caches get no prefix cache; the worker logs why once.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any

from mlx_lm.models.cache import (
    LRUPromptCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)

log = logging.getLogger(__name__)

MODEL_KEY = "model"
"""LRUPromptCache keys entries by model too; a worker serves one model."""
MAX_ENTRIES = 4096
"""Entries are bounded by bytes; this only keeps the trie's bookkeeping small."""
DEFAULT_CONTEXTS = 8
"""The default byte bound holds this many full context windows of KV."""
DEFAULT_MEMORY_SHARE = 0.25
"""...but never more than this share of the machine's memory."""


@dataclass
class CacheStats:
    """Counters for /metrics: prompt tokens asked about, and those found in the cache."""

    queried_tokens: int = 0
    hit_tokens: int = 0


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of KV one token takes in this model (measured on a one-token cache)."""
    import mlx.core as mx

    cache = make_prompt_cache(model)
    model(mx.array([[0]]), cache=cache)
    mx.eval([c.state for c in cache])
    return sum(
        c.keys[..., : c.offset, :].nbytes + c.values[..., : c.offset, :].nbytes for c in cache
    )


def default_cache_bytes(bytes_per_token: int, context_length: int | None) -> int:
    contexts = DEFAULT_CONTEXTS * bytes_per_token * (context_length or 8192)
    return int(min(contexts, DEFAULT_MEMORY_SHARE * _memory_bytes()))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class PrefixCache:
    def __init__(self, model: Any, max_bytes: int) -> None:
        self.enabled = max_bytes > 0 and can_trim_prompt_cache(make_prompt_cache(model))
        if max_bytes > 0 and not self.enabled:
            log.warning(
                "prefix cache off: this model's KV cache cannot be trimmed to a prefix "
                "(rotating or recurrent layers), so cached entries could not be reused"
            )
        self.max_bytes = max_bytes
        self._lru = LRUPromptCache(max_size=MAX_ENTRIES, max_bytes=max_bytes)
        self.stats = CacheStats()

    @property
    def nbytes(self) -> int:
        return self._lru.nbytes if self.enabled else 0

    def fetch(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        """A private copy of the cache for the longest cached prefix of ``tokens``, and that
        prefix's length; always leaves at least one token to feed (the model must see one)."""
        self.stats.queried_tokens += len(tokens)
        if not self.enabled:
            return None, 0
        cache, rest = self._lru.fetch_nearest_cache(MODEL_KEY, tokens)
        if cache is None:
            return None, 0
        if not rest:  # the whole prompt is cached: recompute its last token
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        cached = len(tokens) - len(rest)
        if cached <= 0:
            return None, 0
        self.stats.hit_tokens += cached
        return cache, cached

    def store(self, tokens: list[int], cache: list[Any]) -> None:
        """Keep ``cache``, which holds exactly the KV of ``tokens``; the caller gives it up."""
        if not self.enabled or not tokens:
            return
        held = cache[0].offset if cache and hasattr(cache[0], "offset") else len(tokens)
        if held != len(tokens):
            if held < len(tokens):
                tokens = tokens[:held]
            else:
                trim_prompt_cache(cache, held - len(tokens))
        self._lru.insert_cache(MODEL_KEY, list(tokens), cache)


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
