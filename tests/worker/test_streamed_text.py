"""Text streamed piece by piece adds up to the full text, also when one character's bytes
are split across tokens (emoji, CJK), and stop strings are cut out across pieces."""

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from worker.demo_model import prepare_demo_model
from worker.sequence import Sequence, SequenceSpec

TEXT = "héllo wörld 你好 🙂 naïve café 12345 — done"


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    return load_tokenizer(prepare_demo_model(cache_dir))


def stream_pieces(tokenizer, tokens: list[int], stop: list[str]) -> tuple[list[str], str, bool]:
    spec = SequenceSpec(stops=stop, channels=lambda: None)
    sequence = Sequence(
        "j",
        0,
        [1],
        100,
        detokenizer=tokenizer.detokenizer,
        sampler=None,
        processors=[],
        spec=spec,
    )
    pieces = []
    for token in tokens:
        released, stopped = sequence.add(token)
        pieces.append(released.content)
        if stopped:
            return pieces, sequence.choice("stop").text, True
    pieces.append(sequence.end().content)
    return pieces, sequence.choice("stop").text, False


def test_multibyte_characters_split_across_tokens_stream_intact(tokenizer) -> None:
    tokens = tokenizer.encode(TEXT)
    assert len(tokens) > len(TEXT.split())  # some characters take several tokens
    pieces, text, stopped = stream_pieces(tokenizer, tokens, [])
    assert "".join(pieces) == text == TEXT
    assert not stopped
    assert all("\ufffd" not in piece for piece in pieces)


def test_stop_string_spanning_tokens_is_cut_out(tokenizer) -> None:
    pieces, text, stopped = stream_pieces(tokenizer, tokenizer.encode(TEXT), ["你好"])
    assert stopped
    assert text == "".join(pieces) == "héllo wörld "
