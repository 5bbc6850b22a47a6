"""Prompt building (chat template and its fallback) and fitting max_tokens into the context."""

import logging

import pytest

from shared.errors import ContextLengthExceeded, InvalidRequest
from shared.schemas import ChatMessage, GenerationRequest
from worker.prompt import fit_max_tokens, prompt_token_lists


class FakeTokenizer:
    """Encodes text as one token per character, so results are easy to read."""

    def __init__(self, template: str | None = "<user>{}</user><assistant>", broken: bool = False):
        self.has_chat_template = template is not None
        self._template = template
        self._broken = broken

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **options):
        assert tokenize is False and add_generation_prompt is True
        if self._broken:
            raise ValueError("template error")
        thinking = "<think>" if options.get("enable_thinking") else ""
        return self._template.format(messages[-1]["content"]) + thinking

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def decode(tokens: list[int]) -> str:
    return "".join(chr(t) for t in tokens)


def chat(question: str) -> GenerationRequest:
    return GenerationRequest(
        request_id="r", model="m", messages=[ChatMessage(role="user", content=question)], deadline=0
    )


def test_chat_template_is_applied() -> None:
    assert (
        decode(prompt_token_lists(FakeTokenizer(), chat("hi"))[0]) == "<user>hi</user><assistant>"
    )


@pytest.mark.parametrize("tokenizer", [FakeTokenizer(template=None), FakeTokenizer(broken=True)])
def test_falls_back_to_the_raw_question_with_a_warning(tokenizer, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.prompt"):
        assert decode(prompt_token_lists(tokenizer, chat("What is ML?"))[0]) == "What is ML?"
    assert "using the raw question" in caplog.text


def test_chat_template_options_reach_the_template() -> None:
    request = chat("hi").model_copy(update={"chat_template_kwargs": {"enable_thinking": True}})
    assert decode(prompt_token_lists(FakeTokenizer(), request)[0]).endswith("<assistant><think>")


def test_chat_template_options_cannot_override_what_mlxq_sets() -> None:
    request = chat("hi").model_copy(update={"chat_template_kwargs": {"tokenize": True}})
    with pytest.raises(InvalidRequest, match="may not set"):
        prompt_token_lists(FakeTokenizer(), request)[0]


def test_raw_prompt_skips_the_template() -> None:
    request = GenerationRequest(request_id="r", model="m", prompts=["Once upon"], deadline=0)
    assert decode(prompt_token_lists(FakeTokenizer(), request)[0]) == "Once upon"


def test_omitted_max_tokens_fills_the_context_up_to_the_cap() -> None:
    assert fit_max_tokens(None, prompt_length=100, context_length=8192, cap=4096) == 4096
    assert fit_max_tokens(None, prompt_length=8000, context_length=8192, cap=4096) == 192
    assert fit_max_tokens(None, prompt_length=10, context_length=None, cap=64) == 64


def test_explicit_max_tokens_that_fits_is_kept() -> None:
    assert fit_max_tokens(92, prompt_length=100, context_length=192, cap=4096) == 92


def test_explicit_max_tokens_that_does_not_fit_is_refused_with_the_limit() -> None:
    with pytest.raises(ContextLengthExceeded, match="max_tokens can be at most 92"):
        fit_max_tokens(93, prompt_length=100, context_length=192, cap=4096)


def test_prompt_that_fills_the_context_is_refused() -> None:
    with pytest.raises(ContextLengthExceeded, match="fills the model's context window of 192"):
        fit_max_tokens(None, prompt_length=192, context_length=192, cap=4096)


def test_an_empty_prompt_is_refused() -> None:
    request = GenerationRequest(request_id="r", model="m", prompts=[""], deadline=0)
    with pytest.raises(InvalidRequest, match="The prompt is empty"):
        prompt_token_lists(FakeTokenizer(), request)[0]


def test_a_top_p_too_small_for_float32_samples_greedily() -> None:
    """1 - 1e-50 is 1 in float32: computed as is, nucleus sampling would keep every token."""
    from shared.schemas import SamplingParams
    from worker.sampling import make_request_sampler

    assert make_request_sampler(SamplingParams(temperature=1.0, top_p=1e-50)) is None
    assert make_request_sampler(SamplingParams(temperature=1.0, top_p=0.5)) is not None
