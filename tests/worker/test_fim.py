"""Fill-in-the-middle prompts: which markers a vocabulary has, and the prompt built from a
prefix and a suffix (prefix-suffix-middle order); the demo model has no markers, so a
request with a suffix is refused there with a 400 naming the model."""

from pathlib import Path

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from shared.errors import InvalidRequest
from shared.schemas import GenerationRequest
from worker.fim import fim_prompt, find_fim_tokens
from worker.model import LoadedModel
from worker.prompt import prompt_token_lists
from worker.request_checks import RequestPreparer


class CodeTokenizer:
    """One token per character, plus the special tokens of ``specials`` (a Qwen-Coder-style
    or StarCoder-style vocabulary) and an optional BOS that every text gets."""

    def __init__(self, specials: list[str], bos: int | None = None) -> None:
        self._specials = {name: 1000 + i for i, name in enumerate(specials)}
        self.bos_token_id = bos

    def get_vocab(self) -> dict[str, int]:
        return {**{chr(i): i for i in range(32, 127)}, **self._specials}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        lead = [self.bos_token_id] if add_special_tokens and self.bos_token_id else []
        return lead + [ord(c) for c in text]


QWEN = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|endoftext|>"]
STARCODER = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]


@pytest.mark.parametrize(("specials", "names"), [(QWEN, "<|fim_"), (STARCODER, "<fim_")])
def test_markers_are_found_and_the_prompt_is_prefix_suffix_middle(specials, names) -> None:
    tokenizer = CodeTokenizer(specials)
    fim = find_fim_tokens(tokenizer)
    assert fim is not None and fim.names[0].startswith(names)
    vocab = tokenizer.get_vocab()
    prompt = fim_prompt(tokenizer, fim, "def f(", "):\n")
    assert prompt == [
        vocab[fim.names[0]],
        *map(ord, "def f("),
        vocab[fim.names[1]],
        *map(ord, "):\n"),
        vocab[fim.names[2]],
    ]
    assert fim.names[1].endswith(("fim_suffix|>", "fim_suffix>"))  # prefix, suffix, middle


def test_a_tokenizer_that_adds_a_bos_gets_it_first() -> None:
    tokenizer = CodeTokenizer(["<fim_prefix>", "<fim_suffix>", "<fim_middle>"], bos=7)
    fim = find_fim_tokens(tokenizer)
    assert fim is not None
    assert fim_prompt(tokenizer, fim, "a", "b")[:2] == [7, fim.prefix]


def test_each_text_prompt_becomes_a_fim_prompt() -> None:
    tokenizer = CodeTokenizer(QWEN)
    fim = find_fim_tokens(tokenizer)
    request = GenerationRequest(
        request_id="r", model="m", prompts=["x = ", "y = "], suffix="\n", deadline=0
    )
    lists = prompt_token_lists(tokenizer, request, fim)
    assert len(lists) == 2 and all(tokens[0] == fim.prefix for tokens in lists)  # type: ignore[union-attr]


def test_the_demo_model_has_no_markers_and_refuses_a_suffix(cache_dir: Path) -> None:
    from worker.demo_model import prepare_demo_model

    path = prepare_demo_model(cache_dir)
    tokenizer = load_tokenizer(path)
    assert find_fim_tokens(tokenizer) is None  # SmolLM2's 17 special tokens hold none
    preparer = RequestPreparer(LoadedModel("demo/smol", path, None, tokenizer, 8192), 100)
    request = GenerationRequest(
        request_id="r", model="m", prompts=["def f("], suffix="):", deadline=0
    )
    with pytest.raises(InvalidRequest, match=r"suffix: the model 'demo/smol' cannot fill in"):
        preparer.prepare("job", request, timeout_at=0)
