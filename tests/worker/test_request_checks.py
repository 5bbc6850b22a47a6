"""A prompt that cannot fit is refused before it is tokenized (a megabyte takes seconds)."""

import time

import pytest
from mlx_lm.tokenizer_utils import load as load_tokenizer

from shared.errors import ContextLengthExceeded
from shared.schemas import ChatMessage, GenerationRequest
from worker.demo_model import prepare_demo_model
from worker.model import LoadedModel
from worker.request_checks import RequestPreparer


@pytest.fixture(scope="module")
def preparer(cache_dir) -> RequestPreparer:
    path = prepare_demo_model(cache_dir)
    loaded = LoadedModel("demo", path, None, load_tokenizer(path), 8192)
    return RequestPreparer(loaded, max_tokens_cap=4096)


def _request(text: str) -> GenerationRequest:
    return GenerationRequest(
        request_id="r",
        model="demo",
        messages=[ChatMessage(role="user", content=text)],
        deadline=time.time() + 60,
    )


def test_a_megabyte_prompt_is_refused_without_tokenizing(preparer: RequestPreparer) -> None:
    preparer.prepare("warm", _request("hello"), time.monotonic() + 60)  # builds the bound once
    started = time.perf_counter()
    with pytest.raises(ContextLengthExceeded, match="at least"):
        preparer.prepare("j", _request("lorem ipsum " * 90_000), time.monotonic() + 60)
    assert time.perf_counter() - started < 0.1  # tokenizing it takes seconds


def test_a_prompt_that_fits_is_tokenized(preparer: RequestPreparer) -> None:
    prepared = preparer.prepare("j", _request("lorem ipsum " * 100), time.monotonic() + 60)
    assert 200 <= prepared.prompt_tokens < 8192
