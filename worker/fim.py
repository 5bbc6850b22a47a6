"""Fill-in-the-middle: a prompt that asks a code model for the text between a prefix and a
suffix (``suffix`` on ``/v1/completions`` and ``/api/generate``, as IDE autocomplete sends it).

Code models learn it with three marker tokens, in prefix-suffix-middle order: the model reads
``<prefix marker> prefix <suffix marker> suffix <middle marker>`` and writes the middle. Which
markers a model has is read from its tokenizer's vocabulary at load; a model without them
cannot insert, and a request with a suffix is refused with a 400 that names the model.
"""

from dataclasses import dataclass
from typing import Any

FIM_MARKERS: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder, SmolLM (v1)
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, Qwen3-Coder
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
)
"""The marker triples mlxq knows, each (prefix, suffix, middle), in the order the model reads
them."""


@dataclass(frozen=True)
class FimTokens:
    """A model's fill-in-the-middle marker tokens (ids), and their text."""

    prefix: int
    suffix: int
    middle: int
    names: tuple[str, str, str]


def find_fim_tokens(tokenizer: Any) -> FimTokens | None:
    """The first triple of FIM_MARKERS that the tokenizer's vocabulary holds whole, as single
    tokens; None when it holds none."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else tokenizer.vocab
    for names in FIM_MARKERS:
        ids = [vocab.get(name) for name in names]
        if all(isinstance(i, int) for i in ids):
            prefix, suffix, middle = ids
            assert prefix is not None and suffix is not None and middle is not None
            return FimTokens(prefix, suffix, middle, names)
    return None


def fim_prompt(tokenizer: Any, fim: FimTokens, prefix: str, suffix: str) -> list[int]:
    """The prompt tokens that ask for the middle between ``prefix`` and ``suffix``, with the
    tokenizer's leading special token (a BOS) if it adds one to every text."""
    leading = _leading_special(tokenizer)
    return [
        *leading,
        fim.prefix,
        *tokenizer.encode(prefix, add_special_tokens=False),
        fim.suffix,
        *tokenizer.encode(suffix, add_special_tokens=False),
        fim.middle,
    ]


def _leading_special(tokenizer: Any) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    first = list(tokenizer.encode("a"))[:1]
    return [bos] if first == [bos] else []
