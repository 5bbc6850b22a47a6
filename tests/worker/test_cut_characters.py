"""A choice cut inside a multi-byte character (``max_tokens`` reached after its first bytes)
ends without a U+FFFD, streamed or whole: with the demo model's real tokenizer, whose
byte-level BPE writes an emoji or a CJK character as three byte tokens."""

from pathlib import Path

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from worker.sequence import Sequence, SequenceSpec


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path):
    from worker.demo_model import prepare_demo_model

    return load_tokenizer(prepare_demo_model(cache_dir))


def _generate(tokenizer, tokens: list[int]) -> tuple[str, str]:
    """The streamed text and the choice's text of a sequence given ``tokens``, then ended."""
    sequence = Sequence(
        "job",
        0,
        [1],
        len(tokens),
        detokenizer=tokenizer.detokenizer,
        sampler=None,
        processors=[],
        spec=SequenceSpec(stops=[], channels=lambda: None),
    )
    streamed = "".join(sequence.add(token)[0].content for token in tokens)
    streamed += sequence.end().content
    return streamed, sequence.choice("length").text


@pytest.mark.parametrize("text", ["Hi 😀", "猫", "ok 🦀🦀"])
def test_a_cut_character_is_dropped_not_replaced(tokenizer, text: str) -> None:
    tokens = tokenizer.encode(text, add_special_tokens=False)
    for cut in range(1, len(tokens) + 1):
        streamed, whole = _generate(tokenizer, tokens[:cut])
        assert "\ufffd" not in streamed and "\ufffd" not in whole, (text, cut)
        assert streamed == whole and text.startswith(whole)
    assert _generate(tokenizer, tokens)[1] == text  # whole characters all come through
